//! LSQ in the qconfig (`QConfig::lsq_qat`) against PyTorch's `_LearnableFakeQuantize` on a fused
//! QAT `ConvBnReLU2d` (`scripts/gen_lsq_qat_fixtures.py`): three SGD steps (momentum 0.9,
//! dampening 0) with Burn's optimizer on the whole layer — step 0 on static estimates, steps 1
//! and 2 learning scale and zero-point — then `convert` and the int8 kernels, with 4-bit weights
//! (`[-8, 7]` held in int8) per channel (x86) and per tensor (qnnpack), and 8-bit ones.
//!
//! Tolerances: the forward values (output, loss) to 1e-5 — fake quantization makes them
//! multiples of a scale, so only f32 rounding of the float parts differs; gradients to 1e-4
//! (abs and rel, as `qat_conv_bn`: sums over the batch in other orders, through BN's backward);
//! the learned scales / zero-points and the parameters after each step to 1e-6 abs + 1e-5 rel
//! (an SGD update of those gradients); BN running statistics as `qat_conv_bn`. The training
//! runs end to end on our own values (nothing is reset from the fixture between steps). The
//! conversion starts from PyTorch's final values and is compared exactly: int8 weights, their
//! qparams, the output qparams and the int8 output.

use crate::common::{Fixture, assert_bn_stats, assert_close, to_vec};
use burn::module::{Param, RunningState};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Tensor};
use burn_qat::fuse::fuse_modules_qat;
use burn_qat::int8::{Engine, QParamsPt, QTensor};
use burn_qat::nn::{Activation, ActivationPostProcess, ConvBnAct, ConvBnActConfig};
use burn_qat::quant::{FakeQuantize, QConfig, QuantBackend};
use burn_qat::quantize::{
    enable_param_learning, enable_static_estimate, freeze_bn_stats, prepare_qat,
};
use burn_store::{BurnpackStore, ModuleSnapshot};

/// The generator's learning rate.
const LR: f64 = 0.005;

/// (tag, backend, weight bits, BN statistics training), as `CASES` in the generator. The 4-bit
/// cases freeze the BN statistics at exactly representable square roots: PyTorch's `torch.sqrt`
/// (MKL) is 1 ulp off IEEE for one value in six, and `amax / 7.5` puts each channel's largest
/// weight on a rounding tie that this ulp decides (see the generator's docs).
type Case = (&'static str, QuantBackend, u32, bool);

const CASES: [Case; 3] = [
    ("x86_w4", QuantBackend::X86, 4, false),
    ("qnnpack_w4", QuantBackend::Qnnpack, 4, false),
    ("x86_w8", QuantBackend::X86, 8, true),
];

fn act_fq(layer: &ConvBnAct) -> &FakeQuantize {
    layer
        .activation_post_process
        .fake_quantize()
        .expect("output fake-quant")
}

pub(crate) fn wfq(layer: &ConvBnAct) -> &FakeQuantize {
    layer.weight_fake_quant.as_ref().expect("weight fake-quant")
}

/// The scale and zero-point PyTorch's tensors hold now: the static estimate while the observer
/// is on (PyTorch copies it into the parameters), else the learned parameters.
fn stored(fq: &FakeQuantize) -> (Vec<f32>, Vec<f32>) {
    let l = fq.learnable().expect("an LSQ fake-quant");
    if fq.observer_enabled() {
        let qp = fq.current_qparams();
        (qp.scale, qp.zero_point.iter().map(|&z| z as f32).collect())
    } else {
        l.values()
    }
}

/// The prepared layer with the generator's initial weights, static estimates on.
fn prepared(fx: &Fixture, (tag, backend, bits, bn_training): Case) -> ConvBnAct {
    let device = Device::flex().autodiff();
    let key = |k: &str| format!("{tag}.init.{k}");
    let mut layer = ConvBnActConfig::new(4, 6)
        .with_activation(Activation::Relu)
        .init(&device);
    layer.conv.weight = Param::from_tensor(fx.tensor(&key("weight"), &device));
    let bn = layer.bn.as_mut().unwrap();
    bn.weight = Param::from_tensor(fx.tensor(&key("bn.weight"), &device));
    bn.bias = Param::from_tensor(fx.tensor(&key("bn.bias"), &device));
    bn.running_mean = RunningState::new(fx.tensor(&key("bn.running_mean"), &device));
    bn.running_var = RunningState::new(fx.tensor(&key("bn.running_var"), &device));
    fuse_modules_qat(&mut layer).unwrap();
    prepare_qat(
        &mut layer,
        QConfig::lsq_qat(backend, bits).unwrap(),
        &device,
    )
    .unwrap();
    enable_static_estimate(&mut layer);
    if !bn_training {
        freeze_bn_stats(&mut layer);
    }
    layer
}

/// Three SGD steps, each checked against PyTorch; returns the trained layer.
fn train(fx: &Fixture, case: Case) -> ConvBnAct {
    let device = Device::flex().autodiff();
    let tag = case.0;
    let mut layer = prepared(fx, case);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    for step in 0..3 {
        let key = |k: &str| format!("{tag}.step{step}.{k}");
        if step == 1 {
            enable_param_learning(&mut layer);
        }
        let x: Tensor<4> = fx.tensor(&key("x"), &device);
        let target: Tensor<4> = fx.tensor(&key("target"), &device);
        let y = layer.forward(x);
        let loss = (y.clone() - target).square().mean();
        // The qparams this forward used, as PyTorch's tensors hold them after it (a symmetric
        // zero-point zeroed; an affine one the float parameter, which the forward rounds).
        for (name, fq) in [("wfq", wfq(&layer)), ("act", act_fq(&layer))] {
            let (scale, zp) = stored(fq);
            let used = |k: &str| fx.f32(&key(&format!("{name}.used.{k}")));
            assert_close(&scale, &used("scale"), 1e-6, 1e-5, &key(name));
            assert_close(&zp, &used("zero_point"), 1e-6, 1e-5, &key(name));
        }
        assert_close(&to_vec(y), &fx.f32(&key("y")), 1e-5, 1e-5, &key("y"));
        assert_close(
            &to_vec(loss.clone()),
            &fx.f32(&key("loss")),
            1e-5,
            1e-5,
            &key("loss"),
        );
        let grads = loss.backward();
        let bn = layer.bn.as_ref().unwrap();
        let mut checks = vec![
            (
                "weight_grad",
                layer.conv.weight.val().grad(&grads).map(to_vec),
            ),
            ("bn.weight_grad", bn.weight.val().grad(&grads).map(to_vec)),
            ("bn.bias_grad", bn.bias.val().grad(&grads).map(to_vec)),
        ];
        let (w, a) = (wfq(&layer), act_fq(&layer));
        let (wl, al) = (w.learnable().unwrap(), a.learnable().unwrap());
        if step > 0 {
            checks.push(("wfq.scale_grad", wl.scale.val().grad(&grads).map(to_vec)));
            checks.push(("act.scale_grad", al.scale.val().grad(&grads).map(to_vec)));
            checks.push((
                "act.zero_point_grad",
                al.zero_point.val().grad(&grads).map(to_vec),
            ));
            // A symmetric zero-point gets no gradient here (`quant::learnable` docs); PyTorch's
            // moves a value no forward uses.
            assert!(
                wl.zero_point.val().grad(&grads).is_none(),
                "{tag} wfq zp grad"
            );
        } else {
            assert!(
                wl.scale.val().grad(&grads).is_none(),
                "static: no scale grad"
            );
            assert!(
                al.scale.val().grad(&grads).is_none(),
                "static: no scale grad"
            );
        }
        for (name, grad) in checks {
            let grad = grad.unwrap_or_else(|| panic!("{}: no gradient", key(name)));
            assert_close(&grad, &fx.f32(&key(name)), 1e-4, 1e-4, &key(name));
        }
        assert_bn_stats(
            bn,
            &fx.f32(&key("bn.running_mean")),
            &fx.f32(&key("bn.running_var")),
            1e-6,
            1e-5,
            &key("bn"),
        );
        let grads = GradientsParams::from_grads(grads, &layer);
        layer = optim.step(LR, layer, grads);
        let after = |k: &str| fx.f32(&key(&format!("after.{k}")));
        let bn = layer.bn.as_ref().unwrap();
        let params = [
            ("weight", to_vec(layer.conv.weight.val())),
            ("bn.weight", to_vec(bn.weight.val())),
            ("bn.bias", to_vec(bn.bias.val())),
        ];
        for (name, got) in params {
            assert_close(&got, &after(name), 1e-6, 1e-5, &key(name));
        }
        let (scale, zp) = stored(wfq(&layer));
        assert_close(&scale, &after("wfq.scale"), 1e-6, 1e-5, &key("wfq.scale"));
        assert!(zp.iter().all(|&z| z == 0.0), "{}: {zp:?}", key("wfq.zp"));
        let (scale, zp) = stored(act_fq(&layer));
        assert_close(&scale, &after("act.scale"), 1e-6, 1e-5, &key("act.scale"));
        assert_close(&zp, &after("act.zero_point"), 1e-6, 1e-5, &key("act.zp"));
    }
    layer
}

/// PyTorch's values after the last step, written into the trained layer (the conversion is
/// compared bit for bit, from the same float state).
fn install_final(fx: &Fixture, tag: &str, layer: &mut ConvBnAct) {
    let device = Device::flex().autodiff();
    let key = |k: &str| format!("{tag}.step2.{k}");
    layer.conv.weight = Param::from_tensor(fx.tensor(&key("after.weight"), &device));
    let bn = layer.bn.as_mut().unwrap();
    bn.weight = Param::from_tensor(fx.tensor(&key("after.bn.weight"), &device));
    bn.bias = Param::from_tensor(fx.tensor(&key("after.bn.bias"), &device));
    bn.running_mean = RunningState::new(fx.tensor(&key("bn.running_mean"), &device));
    bn.running_var = RunningState::new(fx.tensor(&key("bn.running_var"), &device));
    bn.freeze_stats(); // PyTorch's m.eval()
    let wl = layer.weight_fake_quant.as_mut().unwrap().learnable.as_mut();
    let wl = wl.unwrap();
    let zeros = vec![0.0; fx.f32(&key("after.wfq.scale")).len()];
    wl.set_values(fx.f32(&key("after.wfq.scale")), zeros);
    let ActivationPostProcess::FakeQuantize(a) = &mut layer.activation_post_process else {
        panic!("output fake-quant");
    };
    a.learnable.as_mut().unwrap().set_values(
        fx.f32(&key("after.act.scale")),
        fx.f32(&key("after.act.zero_point")),
    );
}

fn convert_case(case: Case) {
    let fx = &Fixture::load("qat_lsq.safetensors");
    let (tag, backend, bits, _) = case;
    let mut layer = train(fx, case);
    install_final(fx, tag, &mut layer);
    let prefix = format!("{tag}.convert.");
    check_int8(fx, &prefix, &layer, (backend, bits), Output::Exact);
}

/// How close the converted layer's output must be to PyTorch's.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Output {
    /// Output qparams and int8 values exact.
    Exact,
    /// Output scale to 1e-6 (relative) and int8 values within one quantum: the output observer
    /// calibrated on our float convolution, whose last bits differ from PyTorch's.
    OneQuantum,
}

/// `layer` converted (`to_int8`, PyTorch's `from_float`) against the fixture's `prefix*` values:
/// int8 weights (inside the `bits`-bit range) and weight qparams exact, the float bias to 1e-6,
/// the output as `output` says.
pub(crate) fn check_int8(
    fx: &Fixture,
    prefix: &str,
    layer: &ConvBnAct,
    (backend, bits): (QuantBackend, u32),
    output: Output,
) {
    let key = |k: &str| format!("{prefix}{k}");
    let input = QParamsPt::new(0.05, 64).unwrap();
    let int8 = layer
        .to_int8(input, Engine::from_backend(backend).unwrap())
        .unwrap();
    let weight: Vec<i64> = int8.weight().data().iter().map(|&v| v.into()).collect();
    assert_eq!(weight, fx.i64(&key("weight_int8")), "{prefix} int8 weight");
    let half = 1i64 << (bits - 1);
    assert!(
        weight.iter().all(|w| (-half..half).contains(w)),
        "{prefix}: weights outside the {bits}-bit range"
    );
    let n = fx.shape(&key("weight_scale"))[0];
    let (scales, zps): (Vec<f32>, Vec<i64>) = (0..n)
        .map(|c| int8.weight().qparams().channel(c))
        .map(|(s, z)| (s, z as i64))
        .unzip();
    assert_eq!(
        scales,
        fx.f32(&key("weight_scale")),
        "{prefix} weight scales"
    );
    assert_eq!(
        zps,
        fx.i64(&key("weight_zero_point")),
        "{prefix} weight zps"
    );
    assert_close(
        int8.bias().unwrap(),
        &fx.f32(&key("bias")),
        1e-6,
        1e-5,
        &key("bias"),
    );
    let out_qp = fx.f32(&key("out_qparams"));
    let qp = int8.output_qparams();
    let rtol = if output == Output::Exact { 0.0 } else { 1e-6 };
    assert_close(&[qp.scale], &out_qp[..1], 0.0, rtol, &key("out scale"));
    assert_eq!(qp.zero_point as f32, out_qp[1], "{prefix} out zp");
    let x = fx.f32(&key("x"));
    let xq = QTensor::quantize(&x, &fx.shape(&key("x")), input).unwrap();
    let y: Vec<i64> = int8
        .forward(&xq)
        .unwrap()
        .to_contiguous()
        .data()
        .iter()
        .map(|&v| v.into())
        .collect();
    let want = fx.i64(&key("y_int"));
    if output == Output::Exact {
        assert_eq!(y, want, "{prefix} int8 output");
    } else {
        let worst = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).max();
        assert!(
            worst <= Some(1),
            "{prefix} int8 output: {worst:?} quanta apart"
        );
    }
}

#[test]
fn lsq_conv_bn_relu_x86_4bit_trains_and_converts_as_pytorch() {
    convert_case(CASES[0]);
}

#[test]
fn lsq_conv_bn_relu_qnnpack_4bit_trains_and_converts_as_pytorch() {
    convert_case(CASES[1]);
}

#[test]
fn lsq_conv_bn_relu_x86_8bit_trains_and_converts_as_pytorch() {
    convert_case(CASES[2]);
}

/// The three cases on the generic path (the code a GPU backend runs: LSQ's qparams and
/// backward coefficients as device tensors), forced on flex, with the same tolerances.
#[test]
fn lsq_trains_and_converts_as_pytorch_on_the_generic_path() {
    let _generic = burn_qat::ops::force_generic_path();
    for case in CASES {
        convert_case(case);
    }
}

/// A trained LSQ layer saved as the QAT checkpoints are (burnpack) and loaded into a freshly
/// prepared one gives back its learned scales and zero-points and `learning_enabled`: the
/// parameters hold the values PyTorch's would (checked against the fixture), resuming with
/// `enable_param_learning` keeps them, and the output is the same. The flags are the module's
/// own: a clone switched back to static estimates leaves the original learning.
#[test]
fn trained_lsq_saves_loads_and_resumes() {
    let fx = Fixture::load("qat_lsq.safetensors");
    let case = CASES[0];
    let layer = train(&fx, case);
    let mut store = BurnpackStore::from_bytes(None);
    layer.save_into(&mut store).unwrap();
    let bytes = store.get_bytes().unwrap();

    let mut fresh = prepared(&fx, case);
    let x: Tensor<4> = fx.tensor(&format!("{}.convert.x", case.0), &Device::flex().autodiff());
    // A static forward before loading leaves an estimate pending; the loaded state says none is.
    let _ = fresh.forward(x.clone());
    for fq in [wfq(&fresh), act_fq(&fresh)] {
        let pending = &fq.learnable().unwrap().static_estimate_pending;
        assert_eq!(to_vec(pending.value_sync()), [1.0]);
    }
    let applied = fresh
        .load_from(&mut BurnpackStore::from_bytes(Some(bytes)))
        .unwrap();
    assert!(
        applied.missing.is_empty() && applied.unused.is_empty() && applied.errors.is_empty(),
        "{applied:?}"
    );
    enable_param_learning(&mut fresh); // resuming: the loaded values stay
    let after = |k: &str| fx.f32(&format!("{}.step2.after.{k}", case.0));
    for (name, (a, b)) in [
        ("wfq", (wfq(&layer), wfq(&fresh))),
        ("act", (act_fq(&layer), act_fq(&fresh))),
    ] {
        let (la, lb) = (a.learnable().unwrap(), b.learnable().unwrap());
        assert!(lb.learning_enabled(), "{name}: learning_enabled loaded");
        assert_eq!(la.values(), lb.values(), "{name}: learned values loaded");
        let scale = lb.values().0;
        assert_close(&scale, &after(&format!("{name}.scale")), 1e-6, 1e-5, name);
    }
    assert_eq!(
        to_vec(layer.forward(x.clone())),
        to_vec(fresh.forward(x)),
        "output after loading"
    );

    let mut copy = fresh.clone();
    enable_static_estimate(&mut copy);
    assert!(!wfq(&copy).learnable().unwrap().learning_enabled());
    assert!(wfq(&fresh).learnable().unwrap().learning_enabled());
}
