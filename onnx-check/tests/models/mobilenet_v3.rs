//! MobileNetV3 in ONNX: the small torchvision model of `tests/it/mobilenet_v3.rs`
//! (`scripts/gen_mobilenet_v3_fixtures.py`) exported float, int8 (PyTorch's converted state
//! dicts, both engines) and QDQ (a QAT model with the hardsigmoid's fixed-qparams fake-quant),
//! and run in tract against the crate's own forward and PyTorch's int8 logits. With
//! `BURN_QAT_ONNX_DUMP=DIR` the graphs go to `scripts/check_onnx.py` (onnxruntime).

use super::*;
use burn_qat::models::{
    MobileNetV3, MobileNetV3Config, load_mobilenet_v3, load_quantized_mobilenet_v3,
};
use burn_qat::nn::ImageClassifier;

fn config() -> MobileNetV3Config {
    MobileNetV3Config::small()
        .with_width_mult(0.25)
        .with_reduced_tail(true)
        .with_num_classes(16)
        .with_dropout(0.0)
}

fn fixture() -> Fixture {
    Fixture::load("mobilenet_v3/small.safetensors")
}

fn float_model(device: &Device) -> MobileNetV3 {
    let path = fixture_path("mobilenet_v3/small.pth");
    load_mobilenet_v3(&path, &config(), device).unwrap()
}

#[test]
fn mobilenet_v3_float_export_matches_the_float_forward() {
    let fx = fixture();
    check_float_export(&float_model(&Device::flex()), &fx, "MobileNetV3");
}

#[test]
fn mobilenet_v3_int8_export_runs_in_tract_like_the_crate_and_pytorch() {
    let device = Device::flex();
    let fx = fixture();
    for engine in ["fbgemm", "qnnpack"] {
        let what = format!("mobilenet_v3_small_{engine}");
        let path = fixture_path(&format!("mobilenet_v3/small_{engine}.pth"));
        let model = load_quantized_mobilenet_v3(&path, &config(), engine.parse().unwrap(), &device)
            .unwrap();
        let r = compare_int8_export(&model, &fx, &format!("q_{engine}"), &what);
        let ops = op_counts(&model_of(&r.bytes));
        for op in ["GlobalAveragePool", "HardSigmoid", "Mul", "Add"] {
            assert!(ops.contains_key(op), "{what}: {op} in {ops:?}");
        }
        assert!(r.crate_worst <= 2 && r.pytorch_worst <= 2, "{what}");
    }
}

/// A QAT model (fused for QAT, `prepare_qat`, two observed batches, observers off) exported
/// with Q/DQ pairs, the hardsigmoids' fixed (1/256, 0) among them, runs in tract like its own
/// fake-quant forward.
#[test]
fn mobilenet_v3_qdq_export_of_a_qat_model_matches_its_fake_quant_forward() {
    use burn_qat::quant::{QConfig, QuantBackend};
    use burn_qat::quantize::{disable_observer, prepare_qat};

    let device = Device::flex();
    let fx = fixture();
    let mut model = float_model(&device);
    model.fuse_model(Some(true)).unwrap();
    prepare_qat(
        &mut model,
        QConfig::default_qat(QuantBackend::Qnnpack),
        &device,
    )
    .unwrap();
    let input: Tensor<4> = fx.tensor("input", &device);
    for _ in 0..2 {
        let _ = model.forward(input.clone());
    }
    disable_observer(&mut model);
    let out = model
        .classifier
        .activation_post_process
        .fake_quantize()
        .unwrap();
    let scale = out.current_qparams().scale[0] as f64;
    let (_, _, worst, _) = compare_qdq_export(&model, &fx, scale, "mobilenet_v3_small_qat");
    assert!(worst <= 2, "worst {worst}");
}
