//! Small models and recipes several test modules share.

use burn::tensor::Device;
use burn_qat::finetune::FinetuneConfig;
use burn_qat::models::{MobileNetV2, MobileNetV2Config};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{prepare_qat, replace_relu};

/// MobileNetV2 at width 0.25 (10 classes, no dropout, so that a forward is a function of its
/// input), fused and prepared for QAT with the x86 qconfig.
pub fn small_qat_mobilenet_v2(device: &Device) -> MobileNetV2 {
    let mut model = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10)
        .with_dropout(0.0)
        .init(device)
        .unwrap();
    replace_relu(&mut model).unwrap();
    model.fuse_model(Some(true)).unwrap();
    prepare_qat(&mut model, QConfig::default_qat(QuantBackend::X86), device).unwrap();
    model
}

/// The main job's recipe cut to two epochs of two batches of 8 (observers off and batch norm
/// frozen from the second), one calibration batch and one latency image.
pub fn short_recipe() -> FinetuneConfig {
    FinetuneConfig::new()
        .with_epochs(2)
        .with_batch_size(8)
        .with_max_batches(Some(2))
        .with_calibration_batches(1)
        .with_observer_off_epoch(1)
        .with_bn_freeze_epoch(1)
        .with_latency_images(1)
}
