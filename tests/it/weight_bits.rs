//! Low-bit weights with the plain presets (`QConfig::with_weight_bits`) against PyTorch
//! (`scripts/gen_lsq_qat_fixtures.py`, cases `qat_w4_plain` and `ptq_w4`): PyTorch's x86 QAT and
//! PTQ qconfigs with the weight range `[-8, 7]` — one QAT step and convert, calibrate and
//! convert (`_clamp_weights` included) — and 4-bit weights through whole-model `convert`, the
//! int8 file and back.

use crate::common::{Fixture, assert_close, to_vec};
use crate::qat_lsq::{Output, check_int8, wfq};
use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor};
use burn_qat::convert::convert;
use burn_qat::fuse::fuse_modules_qat;
use burn_qat::int8::Engine;
use burn_qat::io::{load_int8_model, save_int8_model};
use burn_qat::nn::weighted::WeightedLayer;
use burn_qat::nn::{Activation, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, QBatch, QuantStub};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{freeze_bn_stats, prepare, prepare_qat};

/// `QConfig::default_qat(X86).with_weight_bits(4)` (PyTorch's x86 QAT qconfig, weight range
/// `[-8, 7]`): one training forward of the fused ConvBnReLU (BN statistics frozen, see `CASES`)
/// — output, weight gradient and the fused fake-quant's qparams — then convert and int8.
#[test]
fn default_qat_with_4bit_weights_matches_pytorch() {
    let fx = Fixture::load("qat_lsq.safetensors");
    let device = Device::flex().autodiff();
    let key = |k: &str| format!("qat_w4_plain.{k}");
    let mut layer = ConvBnActConfig::new(4, 6)
        .with_activation(Activation::Relu)
        .init(&device);
    layer.conv.weight = Param::from_tensor(fx.tensor(&key("init.weight"), &device));
    let bn = layer.bn.as_mut().unwrap();
    bn.weight = Param::from_tensor(fx.tensor(&key("init.bn.weight"), &device));
    bn.bias = Param::from_tensor(fx.tensor(&key("init.bn.bias"), &device));
    bn.running_mean = RunningState::new(fx.tensor(&key("init.bn.running_mean"), &device));
    bn.running_var = RunningState::new(fx.tensor(&key("init.bn.running_var"), &device));
    fuse_modules_qat(&mut layer).unwrap();
    let qconfig = QConfig::default_qat(QuantBackend::X86)
        .with_weight_bits(4)
        .unwrap();
    prepare_qat(&mut layer, qconfig, &device).unwrap();
    freeze_bn_stats(&mut layer);
    let y = layer.forward(fx.tensor::<4>(&key("x"), &device));
    assert_close(&to_vec(y.clone()), &fx.f32(&key("y")), 1e-5, 1e-5, "y");
    let grads = y.sum().backward();
    let grad = to_vec(layer.conv.weight.val().grad(&grads).unwrap());
    assert_close(
        &grad,
        &fx.f32(&key("weight_grad")),
        1e-4,
        1e-4,
        "weight grad",
    );
    let qp = wfq(&layer).current_qparams();
    assert_eq!(
        qp.scale,
        fx.f32(&key("wfq.scale")),
        "weight fake-quant scales"
    );
    assert_eq!(qp.zero_point, fx.i64(&key("wfq.zero_point")), "zero-points");
    layer.bn.as_mut().unwrap().freeze_stats();
    check_int8(
        &fx,
        &key("convert."),
        &layer,
        (QuantBackend::X86, 4),
        Output::Exact,
    );
}

/// `QConfig::default_ptq(X86).with_weight_bits(4)` (histogram activations, per-channel min/max
/// weights in `[-8, 7]`) on a ConvReLU with bias: calibrate, convert, int8 as PyTorch.
#[test]
fn default_ptq_with_4bit_weights_matches_pytorch() {
    let fx = Fixture::load("qat_lsq.safetensors");
    let device = Device::flex();
    let key = |k: &str| format!("ptq_w4.{k}");
    let mut layer = ConvBnActConfig::new(4, 6)
        .with_batch_norm(false)
        .with_bias(true)
        .with_activation(Activation::Relu)
        .init(&device);
    layer.conv.weight = Param::from_tensor(fx.tensor(&key("weight"), &device));
    layer.conv.bias = Some(Param::from_tensor(fx.tensor(&key("bias"), &device)));
    let qconfig = QConfig::default_ptq(QuantBackend::X86)
        .with_weight_bits(4)
        .unwrap();
    prepare(&mut layer, qconfig, &device).unwrap();
    let _ = layer.forward(fx.tensor::<4>(&key("calib.x"), &device));
    let case = (QuantBackend::X86, 4);
    check_int8(&fx, &key("convert."), &layer, case, Output::OneQuantum);
}

/// `QuantStub → ConvReLU → DeQuantStub`, for whole-model convert and int8 save / load.
#[derive(Module, Debug)]
struct QConv {
    quant: QuantStub,
    conv: ConvBnAct,
    dequant: DeQuantStub,
}

burn_qat::impl_quantizable!(QConv {
    quant,
    conv,
    dequant
});

impl QConv {
    fn new(fx: &Fixture, device: &Device) -> Self {
        let mut conv = ConvBnActConfig::new(4, 6)
            .with_batch_norm(false)
            .with_bias(true)
            .with_activation(Activation::Relu)
            .init(device);
        conv.conv.weight = Param::from_tensor(fx.tensor("ptq_w4.weight", device));
        conv.conv.bias = Some(Param::from_tensor(fx.tensor("ptq_w4.bias", device)));
        QConv {
            quant: QuantStub::new(),
            conv,
            dequant: DeQuantStub::new(),
        }
    }

    fn forward_as<X: Batch<4>>(&self, x: Tensor<4>) -> X::Float {
        let x: X = self.quant.forward(x);
        self.dequant.forward(self.conv.forward(x))
    }
}

/// 4-bit weights through whole-model `convert`, the int8 file (`save_int8_model`) and back
/// (`load_int8_model`): the loaded weights are the converted ones, still in `[-8, 7]`, and the
/// int8 output is the same.
#[test]
fn four_bit_int8_model_saves_and_loads() {
    let fx = Fixture::load("qat_lsq.safetensors");
    let device = Device::flex();
    let mut model = QConv::new(&fx, &device);
    let qconfig = QConfig::default_ptq(QuantBackend::X86)
        .with_weight_bits(4)
        .unwrap();
    prepare(&mut model, qconfig, &device).unwrap();
    let _ = model.forward_as::<Tensor<4>>(fx.tensor("ptq_w4.calib.x", &device));
    convert(&mut model, Engine::X86).unwrap();
    let x: Tensor<4> = fx.tensor("ptq_w4.convert.x", &device);
    let y = to_vec(model.forward_as::<QBatch<4>>(x.clone()).unwrap());

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w4.int8.safetensors");
    save_int8_model(&model, &path, &Default::default()).unwrap();
    let mut loaded = QConv::new(&fx, &device);
    assert_eq!(load_int8_model(&mut loaded, &path).unwrap(), Engine::X86);
    let weights = |m: &QConv| m.conv.int8_weights().unwrap().0.data().to_vec();
    assert_eq!(weights(&loaded), weights(&model));
    assert_eq!(
        weights(&loaded),
        fx.i64("ptq_w4.convert.weight_int8")
            .iter()
            .map(|&w| w as i8)
            .collect::<Vec<_>>(),
        "PyTorch's 4-bit weights"
    );
    assert_eq!(to_vec(loaded.forward_as::<QBatch<4>>(x).unwrap()), y);
}
