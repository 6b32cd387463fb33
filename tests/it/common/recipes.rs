//! Small models and recipes several test modules share.

use burn::tensor::Device;
use burn_qat::finetune::FinetuneConfig;
use burn_qat::models::{MobileNetV2, MobileNetV2Config};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{prepare_qat, replace_relu};

/// MobileNetV2 at width 0.25 (10 classes, no dropout, so that a forward is a function of its
/// input), fused and prepared for QAT with the x86 qconfig.
pub fn small_qat_mobilenet_v2(device: &Device) -> MobileNetV2 {
    small_qat_mobilenet_v2_with(&QConfig::default_qat(QuantBackend::X86), device)
}

/// [`small_qat_mobilenet_v2`] prepared with `qconfig` (fake quantization and observers on).
pub fn small_qat_mobilenet_v2_with(qconfig: &QConfig, device: &Device) -> MobileNetV2 {
    let mut model = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10)
        .with_dropout(0.0)
        .init(device)
        .unwrap();
    replace_relu(&mut model).unwrap();
    model.fuse_model(Some(true)).unwrap();
    prepare_qat(&mut model, qconfig.clone(), device).unwrap();
    model
}

/// `model` as the model fixture scripts prepare it for QAT (`prepared_qat` in
/// `scripts/torchvision_fixtures.py`): `fuse_model(is_qat=True)` and `prepare_qat` with the x86
/// QAT qconfig.
pub fn prepared_qat_x86<M: burn_qat::nn::ImageClassifier>(mut model: M, device: &Device) -> M {
    burn_qat::fuse::fuse_model(&mut model, true).unwrap();
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

/// PyTorch's QAT schedule of the model fixture scripts (`gen_qat` in
/// `scripts/gen_resnet_fixtures.py`, `gen_mobilenet_v3_fixtures.py` and
/// `gen_shufflenet_v2_fixtures.py`) on a model fused and
/// prepared for QAT on an autodiff `device`: fake quantization off, three SGD steps (lr 0.01,
/// momentum 0.9, no dampening) with cross-entropy on `fx`'s `batch{i}.x` / `batch{i}.y`,
/// observers off and batch norms frozen after the first; each step's loss within 1e-4 of
/// `fx`'s `loss_key(i)`. Returns the trained model in eval mode on the flex device.
pub fn pytorch_qat_steps<M: burn_qat::nn::ImageClassifier>(
    mut model: M,
    fx: &super::Fixture,
    loss_key: impl Fn(usize) -> String,
    device: &Device,
) -> M {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::{Int, Tensor, TensorData};
    use burn_qat::quantize::{disable_fake_quant, disable_observer, freeze_bn_stats};

    disable_fake_quant(&mut model);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    for step in 0..3 {
        if step == 1 {
            disable_observer(&mut model);
            freeze_bn_stats(&mut model);
        }
        let x: Tensor<4> = fx.tensor(&format!("batch{step}.x"), device);
        let labels = fx.i64(&format!("batch{step}.y"));
        let n = labels.len();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
        let loss = loss_fn.forward(model.forward(x), y);
        let (what, expected) = (loss_key(step), fx.scalar(&loss_key(step)));
        super::assert_close(
            &[super::to_vec(loss.clone())[0]],
            &[expected],
            0.0,
            1e-4,
            &what,
        );
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
    }
    model.valid().to_device(&Device::flex())
}

/// A full-width model through the crate's own pipeline, with no model-specific code in it:
/// `init()`'s model fused for inference, prepared with `backend`'s PTQ qconfig, calibrated on
/// two random `[2, 3, 64, 64]` batches (uniform in ±2) and converted for `engine`; its int8
/// logits of a random `[1, 3, 64, 48]` image (`num_classes` of them) must be the same bit for
/// bit after `save_int8_model` to `dir/<what>.int8.safetensors` and `load_int8_model` into a
/// fresh `init()` (which must report `engine`), and the reloaded model's int8 ONNX export must
/// have nodes.
pub fn ptq_save_reload_export<M: burn_qat::nn::ImageClassifier>(
    init: impl Fn() -> M,
    backend: QuantBackend,
    engine: burn_qat::int8::Engine,
    num_classes: usize,
    dir: &std::path::Path,
    what: &str,
) {
    use burn::tensor::{Distribution, Tensor};
    use burn_qat::io::{load_int8_model, save_int8_model};
    use burn_qat::onnx::ExportKind;

    let device = Device::flex();
    let mut model = init();
    burn_qat::fuse::fuse_model(&mut model, false).unwrap();
    burn_qat::quantize::prepare(&mut model, QConfig::default_ptq(backend), &device).unwrap();
    let random =
        |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Uniform(-2.0, 2.0), &device);
    for _ in 0..2 {
        model.forward(random([2, 3, 64, 64])); // calibration
    }
    burn_qat::convert::convert(&mut model, engine).unwrap();
    let x = random([1, 3, 64, 48]);
    let before = super::to_vec(model.forward_int8(x.clone()).unwrap());
    assert_eq!(before.len(), num_classes, "{what}");
    let file = dir.join(format!("{what}.int8.safetensors"));
    save_int8_model(&model, &file, &Default::default()).unwrap();
    let mut fresh = init();
    assert_eq!(
        load_int8_model(&mut fresh, &file).unwrap(),
        engine,
        "{what}"
    );
    let after = super::to_vec(fresh.forward_int8(x).unwrap());
    assert_eq!(
        after.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        before.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{what}: reloaded int8 model"
    );
    let graph = fresh.to_onnx(ExportKind::Int8).unwrap().graph.unwrap();
    assert!(!graph.node.is_empty(), "{what}");
}
