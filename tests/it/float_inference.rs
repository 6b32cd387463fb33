//! The inference forward where nothing trains (a plain flex device, `valid()`: one fused op per
//! convolution, batch norm and activation; the crate's max pooling) against the training
//! device's composition of ops, on the same weights and statistics.
//!
//! The float models' inference forward is held to PyTorch by the model tests (`mobilenet_v2`,
//! `resnet`, ...); this covers QAT evaluation, whose fused ConvBn divides by `γ / σ` and runs
//! batch norm on running statistics in the epilogue: with fake quantization off it must give
//! the composition's logits to `f32` rounding, for MobileNetV2 (depthwise, 1×1, bias-free) and
//! ResNet-18 (dense 3×3 on the grid, strided 1×1, max pooling).

use burn::tensor::{Device, Distribution, Tensor};
use burn_qat::models::{MobileNetV2Config, ResNetConfig, TorchvisionModel};
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{
    disable_fake_quant, disable_observer, freeze_bn_stats, prepare_qat, replace_relu,
};

use crate::common::{assert_close, to_vec};

/// QAT-prepares `model` (fused ConvBn kept), trains its observers and batch-norm statistics on
/// one batch, freezes both, switches fake quantization off, then compares the logits on the
/// autodiff device (the composition) with those of `valid()` on the plain device.
fn check<M: ImageClassifier + TorchvisionModel>(mut model: M, input: [usize; 4], what: &str) {
    let device = Device::flex().autodiff();
    replace_relu(&mut model).unwrap();
    model.fuse_model(Some(true)).unwrap();
    prepare_qat(&mut model, QConfig::default_qat(QuantBackend::X86), &device).unwrap();
    let x = Tensor::<4>::random(input, Distribution::Normal(0.0, 1.0), &device);
    let _ = model.forward(x.clone());
    disable_observer(&mut model);
    freeze_bn_stats(&mut model);
    disable_fake_quant(&mut model);
    let composed = to_vec(model.forward(x.clone()));
    let fused = to_vec(model.valid().forward(x.inner()));
    let scale = composed.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the logits are not all zero");
    assert_close(&fused, &composed, 1e-5 * scale, 1e-4, what);
}

#[test]
fn qat_evaluation_matches_the_training_device_mobilenet_v2() {
    let device = Device::flex().autodiff();
    let model = MobileNetV2Config::new()
        .with_width_mult(0.5)
        .with_num_classes(10)
        // Dropout trains on the autodiff device.
        .with_dropout(0.0)
        .init(&device)
        .unwrap();
    check(model, [2, 3, 64, 64], "MobileNetV2 QAT evaluation");
}

#[test]
fn qat_evaluation_matches_the_training_device_resnet18() {
    let device = Device::flex().autodiff();
    let model = ResNetConfig::resnet18()
        .with_num_classes(10)
        .init(&device)
        .unwrap();
    check(model, [1, 3, 64, 64], "ResNet-18 QAT evaluation");
}
