//! The fused QAT convolution (`ConvBnAct` after `fuse_modules_qat` + `prepare_qat`, i.e.
//! `torch.ao.nn.intrinsic.qat.ConvBnReLU2d`) against
//! PyTorch: three training steps with the default qnnpack and x86 QAT qconfigs
//! (`scripts/gen_fixtures.py`, `qat_conv_bn`).

use crate::common::{Fixture, assert_bn_stats, assert_close, to_vec};
use burn::module::{Param, RunningState};
use burn::tensor::{Device, Tensor};
use burn_qat::fuse::fuse_modules_qat;
use burn_qat::int8::{Engine, QParamsPt, QTensor};
use burn_qat::nn::{
    Activation, ActivationPostProcess, ConvBnAct, ConvBnActConfig, LinearBnActConfig,
};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::prepare_qat;

fn run(backend: QuantBackend, tag: &str) -> ConvBnAct {
    run_on(&Device::flex().autodiff(), backend, tag)
}

/// Runs the three training steps on `device`, checking each against PyTorch, and returns the
/// trained layer.
fn run_on(device: &Device, backend: QuantBackend, tag: &str) -> ConvBnAct {
    let fx = Fixture::load("qat_conv_bn.safetensors");
    let device = device.clone();
    let qconfig = QConfig::default_qat(backend);
    let mut layer = ConvBnActConfig::new(4, 6)
        .with_activation(Activation::Relu)
        .init(&device);
    let bn = layer.bn.as_mut().unwrap();
    bn.running_mean = RunningState::new(fx.tensor(&format!("{tag}.init.bn.running_mean"), &device));
    bn.running_var = RunningState::new(fx.tensor(&format!("{tag}.init.bn.running_var"), &device));
    fuse_modules_qat(&mut layer).unwrap();
    prepare_qat(&mut layer, &qconfig, &device).unwrap();
    // The PyTorch module alone has no output fake-quant (prepare attaches it as a hook).
    layer.activation_post_process = ActivationPostProcess::default();
    for step in 0..3 {
        let key = |k: &str| format!("{tag}.step{step}.{k}");
        // Parameters as PyTorch had them at this step; stateful parts (BN running statistics,
        // weight fake-quant observer) carry over from our own previous steps.
        layer.conv.weight = Param::from_tensor(fx.tensor(&key("weight"), &device));
        let bn = layer.bn.as_mut().unwrap();
        bn.weight = Param::from_tensor(fx.tensor(&key("bn.weight"), &device));
        bn.bias = Param::from_tensor(fx.tensor(&key("bn.bias"), &device));

        let x: Tensor<4> = fx.tensor(&key("x"), &device).require_grad();
        let y = layer.forward(x.clone());
        let grads = (y.clone() * fx.tensor::<4>(&key("g"), &device))
            .sum()
            .backward();
        assert_close(&to_vec(y), &fx.f32(&key("y")), 1e-5, 1e-5, &key("y"));
        let bn = layer.bn.as_ref().unwrap();
        let checks = [
            ("x_grad", x.grad(&grads).map(to_vec)),
            (
                "weight_grad",
                layer.conv.weight.val().grad(&grads).map(to_vec),
            ),
            ("bn.weight_grad", bn.weight.val().grad(&grads).map(to_vec)),
            ("bn.bias_grad", bn.bias.val().grad(&grads).map(to_vec)),
        ];
        for (name, grad) in checks {
            let grad = grad.unwrap_or_else(|| panic!("{name}: no gradient"));
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
        let qp = layer.weight_fake_quant.as_ref().unwrap().current_qparams();
        assert_close(
            &qp.scale,
            &fx.f32(&key("wfq.scale")),
            0.0,
            1e-6,
            &key("scale"),
        );
        assert_eq!(
            qp.zero_point,
            fx.i64(&key("wfq.zero_point")),
            "{}",
            key("zero_point")
        );
    }
    layer
}

/// The same three steps on the GPU backend (`common::gpu_device`), same tolerances.
#[test]
fn conv_bn_relu_matches_pytorch_on_the_gpu_backend() {
    let Some(gpu) = crate::common::gpu_device() else {
        return;
    };
    run_on(&gpu.clone().autodiff(), QuantBackend::Qnnpack, "qnnpack");
    run_on(&gpu.autodiff(), QuantBackend::X86, "x86");
}

/// The same three steps on the generic path (the code a GPU backend runs) forced on flex.
#[test]
fn conv_bn_relu_matches_pytorch_on_the_generic_path() {
    let _generic = burn_qat::ops::force_generic_path();
    let device = Device::flex().autodiff();
    run_on(&device, QuantBackend::Qnnpack, "qnnpack");
    run_on(&device, QuantBackend::X86, "x86");
}

#[test]
fn conv_bn_relu_qnnpack_matches_pytorch_for_three_steps() {
    run(QuantBackend::Qnnpack, "qnnpack");
}

/// After training: calibrate an output fake-quant in eval mode, `convert` to int8
/// (`nniq.ConvReLU2d.from_float`) and run it: weights, qparams, bias and int8 outputs as PyTorch.
fn convert_after_qat(backend: QuantBackend, tag: &str) {
    let fx = Fixture::load("qat_conv_bn.safetensors");
    let device = Device::flex().autodiff();
    let mut layer = run(backend, tag);
    let key = |k: &str| format!("{tag}.{k}");
    layer.conv.weight = Param::from_tensor(fx.tensor(&key("final.weight"), &device));
    let bn = layer.bn.as_mut().unwrap();
    bn.weight = Param::from_tensor(fx.tensor(&key("final.bn.weight"), &device));
    bn.bias = Param::from_tensor(fx.tensor(&key("final.bn.bias"), &device));
    bn.freeze_stats(); // PyTorch's m.eval()
    let act = QConfig::default_qat(backend).activation.fake_quantize();
    layer.activation_post_process =
        ActivationPostProcess::FakeQuantize(act.init(1, &device).unwrap());
    let _ = layer.forward(fx.tensor(&key("convert.x"), &device));

    let engine = Engine::from_backend(backend).unwrap();
    let input = QParamsPt::new(0.05, 64).unwrap();
    let int8 = layer.to_int8(input, engine).unwrap();
    let weight = ints(int8.weight().data());
    assert_eq!(
        weight,
        fx.i64(&key("convert.weight_int8")),
        "{tag} int8 weight"
    );
    let (scales, zps): (Vec<f32>, Vec<i64>) = (0..layer.out_channels())
        .map(|c| int8.weight().qparams().channel(c))
        .map(|(s, z)| (s, z as i64))
        .take(fx.shape(&key("convert.weight_scale"))[0])
        .unzip();
    assert_close(
        &scales,
        &fx.f32(&key("convert.weight_scale")),
        0.0,
        1e-6,
        &key("w scale"),
    );
    assert_eq!(zps, fx.i64(&key("convert.weight_zero_point")), "{tag} w zp");
    let bias = int8.bias().unwrap();
    assert_close(
        bias,
        &fx.f32(&key("convert.bias")),
        1e-6,
        1e-5,
        &key("bias"),
    );
    let out_qp = fx.f32(&key("convert.out_qparams"));
    let qp = int8.output_qparams();
    assert_close(&[qp.scale], &out_qp[..1], 0.0, 1e-6, &key("out scale"));
    assert_eq!(qp.zero_point as f32, out_qp[1], "{tag} out zp");
    let x = fx.f32(&key("convert.x"));
    let xq = QTensor::quantize(&x, &fx.shape(&key("convert.x")), input).unwrap();
    let y = ints(int8.forward(&xq).unwrap().to_contiguous().data());
    assert_eq!(y, fx.i64(&key("convert.y_int")), "{tag} int8 output");
}

#[test]
fn convert_after_qnnpack_qat_matches_pytorch() {
    convert_after_qat(QuantBackend::Qnnpack, "qnnpack");
}

#[test]
fn convert_after_x86_qat_matches_pytorch() {
    convert_after_qat(QuantBackend::X86, "x86");
}

#[test]
fn conv_bn_relu_x86_per_channel_matches_pytorch_for_three_steps() {
    run(QuantBackend::X86, "x86");
}

#[test]
fn convert_before_prepare_or_calibration_names_what_is_missing() {
    let device = Device::flex().autodiff();
    let input = QParamsPt::new(0.05, 64).unwrap();
    let mut layer = ConvBnActConfig::new(4, 6)
        .with_activation(Activation::Relu)
        .init(&device);
    let err = layer
        .to_int8(input, Engine::Qnnpack)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight fake-quant"), "{err}");
    fuse_modules_qat(&mut layer).unwrap();
    prepare_qat(
        &mut layer,
        QConfig::default_qat(QuantBackend::Qnnpack),
        &device,
    )
    .unwrap();
    let err = layer
        .to_int8(input, Engine::Qnnpack)
        .unwrap_err()
        .to_string();
    assert!(err.contains("before calibration"), "{err}");
}

/// A QAT linear layer after one forward pass, converted (`nnq.Linear.from_float`) and run in
/// int8: weights, qparams and outputs as PyTorch (`qat_linear` fixture).
fn convert_linear_case(backend: QuantBackend, tag: &str) {
    let fx = Fixture::load("qat_linear.safetensors");
    let device = Device::flex().autodiff();
    let key = |k: &str| format!("{tag}.{k}");
    let mut layer = LinearBnActConfig::new(16, 5).init(&device);
    let w: Tensor<2> = fx.tensor(&key("weight"), &device);
    layer.linear.weight = Param::from_tensor(w.transpose());
    layer.linear.bias = Some(Param::from_tensor(fx.tensor(&key("bias"), &device)));
    prepare_qat(&mut layer, QConfig::default_qat(backend), &device).unwrap();
    let _ = layer.forward(fx.tensor(&key("x"), &device));

    let input = QParamsPt::new(0.05, 64).unwrap();
    let int8 = layer
        .to_int8(input, Engine::from_backend(backend).unwrap())
        .unwrap();
    let weight = ints(int8.weight().data());
    assert_eq!(weight, fx.i64(&key("weight_int8")), "{tag} int8 weight");
    let x = fx.f32(&key("x"));
    let xq = QTensor::quantize(&x, &fx.shape(&key("x")), input).unwrap();
    let y = ints(int8.forward(&xq).unwrap().to_contiguous().data());
    assert_eq!(y, fx.i64(&key("y_int")), "{tag} int8 output");
    let out_qp = fx.f32(&key("out_qparams"));
    assert_close(
        &[int8.output_qparams().scale],
        &out_qp[..1],
        0.0,
        1e-6,
        &key("out scale"),
    );
}

#[test]
fn convert_linear_matches_pytorch() {
    convert_linear_case(QuantBackend::Qnnpack, "qnnpack");
    convert_linear_case(QuantBackend::X86, "x86");
}

/// Integer values of a quantized buffer, widened for comparison with the fixtures.
fn ints<T: Copy + Into<i64>>(values: &[T]) -> Vec<i64> {
    values.iter().map(|&v| v.into()).collect()
}
