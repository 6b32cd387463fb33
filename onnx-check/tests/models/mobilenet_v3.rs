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

fn onnx(model: &MobileNetV3, kind: ExportKind) -> Vec<u8> {
    model.to_onnx(kind).unwrap().encode_to_vec()
}

fn fixture() -> (Fixture, Vec<f32>, Vec<usize>) {
    let fx = Fixture::load("mobilenet_v3/small.safetensors");
    let (x, shape) = (fx.f32("input"), fx.shape("input"));
    (fx, x, shape)
}

fn float_model(device: &Device) -> MobileNetV3 {
    let path = fixture_path("mobilenet_v3/small.pth");
    load_mobilenet_v3(&path, &config(), device).unwrap()
}

#[test]
fn mobilenet_v3_float_export_matches_the_float_forward() {
    let device = Device::flex();
    let (fx, x, shape) = fixture();
    let model = float_model(&device);
    let theirs = tract_run(&onnx(&model, ExportKind::Float), &x, &shape);
    let ours = to_vec(model.forward(fx.tensor("input", &device)));
    let worst = theirs
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("MobileNetV3 float export: tract vs crate max abs difference {worst:e}");
    assert_eq!(theirs.len(), ours.len());
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn mobilenet_v3_int8_export_runs_in_tract_like_the_crate_and_pytorch() {
    let device = Device::flex();
    let (fx, x, shape) = fixture();
    for engine in ["fbgemm", "qnnpack"] {
        let what = format!("mobilenet_v3_small_{engine}");
        let path = fixture_path(&format!("mobilenet_v3/small_{engine}.pth"));
        let model = load_quantized_mobilenet_v3(&path, &config(), engine.parse().unwrap(), &device)
            .unwrap();
        let bytes = onnx(&model, ExportKind::Int8);
        let ops = op_counts(&model_of(&bytes));
        for op in ["GlobalAveragePool", "HardSigmoid", "Mul", "Add"] {
            assert!(ops.contains_key(op), "{what}: {op} in {ops:?}");
        }
        let theirs = tract_run(&bytes, &x, &shape);
        let ours = to_vec(model.forward_int8(fx.tensor("input", &device)).unwrap());
        dump(
            &what,
            &bytes,
            &x,
            &shape,
            &ours,
            &[shape[0], ours.len() / shape[0]],
        );
        let scale = fx.f32(&format!("q_{engine}_scale"))[0] as f64;
        let zp = fx.i64(&format!("q_{engine}_zero_point"))[0];
        let pytorch: Vec<f32> = fx
            .i64(&format!("q_{engine}"))
            .iter()
            .map(|&q| ((q - zp) as f64 * scale) as f32)
            .collect();
        let n = ours.len();
        let (eq_c, w1_c, worst_c) = quanta(&theirs, &ours, scale);
        let (eq_p, _, worst_p) = quanta(&theirs, &pytorch, scale);
        println!(
            "{what}: tract vs crate int8 {eq_c}/{n} equal, {w1_c}/{n} within 1 quantum, max \
             {worst_c}; tract vs PyTorch {eq_p}/{n} equal, max {worst_p}"
        );
        assert!(worst_c <= 2 && worst_p <= 2, "{what}");
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
    let (fx, x, shape) = fixture();
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
    let ours = to_vec(model.forward(input));
    let bytes = onnx(&model, ExportKind::FakeQuant);
    let theirs = tract_run(&bytes, &x, &shape);
    dump(
        "mobilenet_v3_small_qat",
        &bytes,
        &x,
        &shape,
        &ours,
        &[shape[0], 16],
    );
    let out = model
        .classifier
        .activation_post_process
        .fake_quantize()
        .unwrap();
    let scale = out.current_qparams().scale[0] as f64;
    let n = ours.len();
    let (equal, within1, worst) = quanta(&theirs, &ours, scale);
    println!(
        "MobileNetV3 QAT QDQ export: tract vs fake-quant forward {equal}/{n} equal, \
         {within1}/{n} within 1 quantum, max {worst}"
    );
    assert!(worst <= 2, "{theirs:?}\n{ours:?}");
}
