//! ShuffleNetV2 in ONNX: the small torchvision model of `tests/it/shufflenet_v2.rs`
//! (`scripts/gen_shufflenet_v2_fixtures.py`) exported float, int8 (PyTorch's converted state
//! dicts, both engines) and QDQ (a QAT model), and run in tract against the crate's own forward
//! and PyTorch's int8 logits. The channel split is a `Slice` pair, the join a `Concat`, the
//! shuffle `Reshape → Transpose → Reshape`. With `BURN_QAT_ONNX_DUMP=DIR` the graphs go to
//! `scripts/check_onnx.py` (onnxruntime).

use super::*;
use burn_qat::models::{
    ShuffleNetV2, ShuffleNetV2Config, load_quantized_shufflenet_v2, load_shufflenet_v2,
};
use burn_qat::nn::ImageClassifier;

fn config() -> ShuffleNetV2Config {
    ShuffleNetV2Config::new([2, 1, 2], [8, 16, 32, 64, 128]).with_num_classes(32)
}

fn path(file: &str) -> PathBuf {
    fixture_path(&format!("shufflenet_v2/{file}"))
}

fn onnx(model: &ShuffleNetV2, kind: ExportKind) -> Vec<u8> {
    model.to_onnx(kind).unwrap().encode_to_vec()
}

#[test]
fn shufflenet_v2_float_export_matches_the_float_forward() {
    let device = Device::flex();
    let fx = Fixture::load("shufflenet_v2/model.safetensors");
    let model = load_shufflenet_v2(&path("model.pth"), &config(), &device).unwrap();
    let bytes = onnx(&model, ExportKind::Float);
    let ops = op_counts(&model_of(&bytes));
    assert_eq!((ops["Slice"], ops["Concat"]), (4, 5), "{ops:?}");
    let (x, shape) = (fx.f32("input"), fx.shape("input"));
    let theirs = tract_run(&bytes, &x, &shape);
    let ours = to_vec(model.forward(fx.tensor("input", &device)));
    let worst = theirs
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("shufflenet_v2 float export: tract vs crate max abs difference {worst:e}");
    assert_eq!(theirs.len(), ours.len());
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn shufflenet_v2_int8_export_runs_in_tract_like_the_crate_and_pytorch() {
    let device = Device::flex();
    let fx = Fixture::load("shufflenet_v2/model.safetensors");
    let (x, shape) = (fx.f32("input"), fx.shape("input"));
    for engine in ["fbgemm", "qnnpack"] {
        let what = format!("shufflenet_v2_{engine}");
        let model = load_quantized_shufflenet_v2(
            &path(&format!("model_{engine}.pth")),
            &config(),
            engine.parse().unwrap(),
            &device,
        )
        .unwrap();
        let bytes = onnx(&model, ExportKind::Int8);
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
        let key = format!("q_{engine}_input");
        let scale = fx.f32(&format!("{key}_scale"))[0] as f64;
        let zp = fx.i64(&format!("{key}_zero_point"))[0];
        let pytorch: Vec<f32> = fx
            .i64(&key)
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
        // Measured: every logit equal on both engines (the crate equals PyTorch bit for bit,
        // tests/it/shufflenet_v2.rs).
        assert_eq!(
            (eq_c, eq_p),
            (n, n),
            "{what}: tract vs crate, tract vs PyTorch"
        );
    }
}

/// A QAT model (fused for QAT, `prepare_qat`, two observed batches, observers off) exported
/// with Q/DQ pairs runs in tract like its own fake-quant forward.
#[test]
fn shufflenet_v2_qdq_export_matches_its_fake_quant_forward() {
    use burn_qat::quant::{QConfig, QuantBackend};
    use burn_qat::quantize::{disable_observer, prepare_qat};

    let device = Device::flex();
    let fx = Fixture::load("shufflenet_v2/model.safetensors");
    let (x, shape) = (fx.f32("input"), fx.shape("input"));
    let mut model = load_shufflenet_v2(&path("model.pth"), &config(), &device).unwrap();
    model.fuse_model(Some(true)).unwrap();
    prepare_qat(&mut model, QConfig::default_qat(QuantBackend::X86), &device).unwrap();
    let input: Tensor<4> = fx.tensor("input", &device);
    for _ in 0..2 {
        let _ = model.forward(input.clone());
    }
    disable_observer(&mut model);
    let ours = to_vec(model.forward(input));
    let bytes = onnx(&model, ExportKind::FakeQuant);
    let theirs = tract_run(&bytes, &x, &shape);
    dump(
        "shufflenet_v2_qat",
        &bytes,
        &x,
        &shape,
        &ours,
        &[shape[0], ours.len() / shape[0]],
    );
    let out = model.fc.activation_post_process.fake_quantize().unwrap();
    let scale = out.current_qparams().scale[0] as f64;
    let n = ours.len();
    let (equal, within1, worst) = quanta(&theirs, &ours, scale);
    println!(
        "shufflenet_v2 QAT QDQ export: tract vs fake-quant forward {equal}/{n} equal, \
         {within1}/{n} within 1 quantum, max {worst}"
    );
    assert!(
        within1 * 100 >= n * 99 && worst <= 2,
        "{theirs:?}\n{ours:?}"
    );
}
