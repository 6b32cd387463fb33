//! The eager-mode workflow on MobileNetV2: inference fusion keeps the logits, QAT preparation
//! makes every parameter trainable, and misuse gives clear errors that leave the model intact.

use crate::common::{Fixture, assert_close, fixture_path, to_vec};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use burn_qat::models::{MobileNetV2, MobileNetV2Config, load_mobilenet_v2};
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{prepare, prepare_qat, replace_relu};

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
        QConfig::default_ptq(QuantBackend::Qnnpack),
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

/// Counts trainable parameters and those that received a gradient, and keeps the gradients.
struct GradCheck<'a> {
    grads: &'a burn::tensor::Gradients,
    trainable: usize,
    missing: Vec<usize>,
    values: Vec<Vec<f32>>,
}

impl<'a> GradCheck<'a> {
    fn of(model: &MobileNetV2, grads: &'a burn::tensor::Gradients) -> Self {
        let mut check = GradCheck {
            grads,
            trainable: 0,
            missing: vec![],
            values: vec![],
        };
        model.visit(&mut check);
        check
    }
}

impl ModuleVisitor for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return; // running statistics, observer state
        }
        self.trainable += 1;
        match value.grad(self.grads) {
            Some(grad) => self.values.push(to_vec(grad)),
            None => self.missing.push(self.trainable),
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
        prepare_qat(&mut model, QConfig::default_qat(backend), &device).unwrap();
        let grads = model.forward(x).square().sum().backward();
        let check = GradCheck::of(&model, &grads);
        // conv weights (52) + BN γ, β (52 each) + classifier weight and bias.
        assert_eq!(check.trainable, 52 * 3 + 2, "{backend:?}");
        assert!(
            check.missing.is_empty(),
            "{backend:?}: no gradient for {:?}",
            check.missing
        );
    }
}

/// Largest absolute value.
fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// QAT on the GPU backend gives flex's gradients, also on 32×32 inputs, whose last maps are 1×1:
/// Burn 0.22's wgpu fusion misreads some strided views of such maps (the channels-major 1×1
/// product, a reshaped weight gradient), so the QAT layers keep those views to the CPU backend.
/// Fake quantization and observers are off: a different summation order may move a value across
/// a rounding step, which is not a defect.
#[test]
fn gpu_qat_gradients_match_flex_with_1x1_maps() {
    let Some(gpu) = crate::common::gpu_device() else {
        return;
    };
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10)
        .with_dropout(0.0);
    let flex = Device::flex();
    flex.seed(7);
    let record = config.init(&flex).unwrap().into_record();
    let (n, side) = (8, 32);
    let pixels: Vec<f32> = (0..n * 3 * side * side)
        .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 * 3.0 - 1.5)
        .collect();
    let mut runs = Vec::new();
    for device in [flex.autodiff(), gpu.autodiff()] {
        let mut model = config.init(&device).unwrap().load_record(record.clone());
        replace_relu(&mut model).unwrap();
        model.fuse_model(Some(true)).unwrap();
        prepare_qat(
            &mut model,
            QConfig::default_qat(QuantBackend::Qnnpack),
            &device,
        )
        .unwrap();
        burn_qat::quantize::disable_fake_quant(&mut model);
        burn_qat::quantize::disable_observer(&mut model);
        let data = burn::tensor::TensorData::new(pixels.clone(), [n, 3, side, side]);
        let x = Tensor::<4>::from_data(data, &device).require_grad();
        let grads = model.forward(x.clone()).square().sum().backward();
        let mut values = GradCheck::of(&model, &grads).values;
        values.push(to_vec(x.grad(&grads).unwrap()));
        runs.push(values);
    }
    assert_eq!(runs[0].len(), runs[1].len());
    let largest = runs[0].iter().map(|g| max_abs(g)).fold(0.0, f32::max);
    for (i, (cpu, gpu)) in runs[0].iter().zip(&runs[1]).enumerate() {
        // Relative to the tensor's largest gradient, or the model's for a tensor whose gradient
        // is rounding noise (a BN bias before another BN), and loose: batch norm over 8 values per channel on 1×1 maps
        // magnifies the backends' different summation orders to about 1% here. The misread
        // views gave differences larger than the gradients themselves.
        let atol = 5e-2 * max_abs(cpu).max(1e-4 * largest);
        let what = format!("GPU against flex, gradient {i} of {}", runs[0].len());
        assert_close(gpu, cpu, atol, 1e-3, &what);
    }
}
