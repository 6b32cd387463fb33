//! The eager-mode workflow on MobileNetV2: inference fusion keeps the logits, QAT preparation
//! makes every parameter trainable, and misuse gives clear errors that leave the model intact.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use burn_qat::models::{MobileNetV2, MobileNetV2Config, load_mobilenet_v2};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{prepare, prepare_qat, replace_relu};
use common::{Fixture, assert_close, fixture_path, to_vec};

fn load(device: &Device) -> (MobileNetV2, Tensor<4>) {
    let fx = Fixture::load("mobilenet_v2_w050.safetensors");
    let config = MobileNetV2Config::new()
        .with_width_mult(0.5)
        .with_num_classes(10);
    let model = load_mobilenet_v2(&fixture_path("mobilenet_v2_w050.pth"), &config, device).unwrap();
    (model, fx.tensor("input", device))
}

#[test]
fn inference_fusion_keeps_the_float_logits() {
    let device = Device::flex();
    let (mut model, x) = load(&device);
    replace_relu(&mut model).unwrap();
    let unfused = to_vec(model.forward(x.clone()));
    model.fuse_model(Some(false)).unwrap();
    assert!(model.stem.bn.is_none(), "BN folded away");
    let fused = to_vec(model.forward(x));
    assert_close(&fused, &unfused, 1e-5, 1e-5, "fused vs unfused logits");
}

#[test]
fn fusion_misuse_is_a_clear_error_and_changes_nothing() {
    let device = Device::flex();
    let (mut model, x) = load(&device);
    // ReLU6 does not fuse (PyTorch has no conv+bn+relu6 pattern either).
    let err = model.fuse_model(Some(false)).unwrap_err().to_string();
    assert!(err.contains("replace_relu"), "{err}");
    replace_relu(&mut model).unwrap();
    let before = to_vec(model.forward(x.clone()));
    model.fuse_model(Some(false)).unwrap();
    let err = model.fuse_model(Some(false)).unwrap_err().to_string();
    assert!(err.contains("already fused"), "{err}");
    assert_close(
        &to_vec(model.forward(x)),
        &before,
        1e-5,
        1e-5,
        "after failed fuse",
    );

    // Inference fusion of a training model (autodiff device, BN in training mode).
    let train_device = Device::flex().autodiff();
    let (mut model, _) = load(&train_device);
    replace_relu(&mut model).unwrap();
    assert!(model.is_training());
    let err = model.fuse_model(Some(false)).unwrap_err().to_string();
    assert!(err.contains("eval-mode"), "{err}");
    assert!(
        model.stem.bn.is_some(),
        "a failed fuse leaves batch norms in place"
    );
    // `None` follows the mode: QAT fusion for a training model.
    model.fuse_model(None).unwrap();
    assert!(model.stem.bn.is_some());
}

#[test]
fn preparing_an_unfused_or_prepared_model_is_a_clear_error() {
    let device = Device::flex().autodiff();
    let (mut model, _) = load(&device);
    replace_relu(&mut model).unwrap();
    let qconfig = QConfig::default_qat(QuantBackend::Qnnpack);
    let err = prepare_qat(&mut model, &qconfig, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be fused"), "{err}");
    let err = prepare(
        &mut model,
        &QConfig::default_ptq(QuantBackend::Qnnpack),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("must be fused"), "{err}");
    model.fuse_model(Some(true)).unwrap();
    prepare_qat(&mut model, &qconfig, &device).unwrap();
    let err = prepare_qat(&mut model, &qconfig, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already prepared"), "{err}");
}

/// Counts trainable parameters and those that received a gradient.
struct GradCheck<'a> {
    grads: &'a burn::tensor::Gradients,
    trainable: usize,
    missing: Vec<usize>,
}

impl ModuleVisitor for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return; // running statistics, observer state
        }
        self.trainable += 1;
        if value.grad(self.grads).is_none() {
            self.missing.push(self.trainable);
        }
    }
}

#[test]
fn gradients_reach_every_trainable_parameter_after_prepare_qat() {
    let device = Device::flex().autodiff();
    for backend in [QuantBackend::Qnnpack, QuantBackend::X86] {
        let (mut model, x) = load(&device);
        replace_relu(&mut model).unwrap();
        model.fuse_model(Some(true)).unwrap();
        prepare_qat(&mut model, &QConfig::default_qat(backend), &device).unwrap();
        let grads = model.forward(x).square().sum().backward();
        let mut check = GradCheck {
            grads: &grads,
            trainable: 0,
            missing: vec![],
        };
        model.visit(&mut check);
        // conv weights (52) + BN γ, β (52 each) + classifier weight and bias.
        assert_eq!(check.trainable, 52 * 3 + 2, "{backend:?}");
        assert!(
            check.missing.is_empty(),
            "{backend:?}: no gradient for {:?}",
            check.missing
        );
    }
}
