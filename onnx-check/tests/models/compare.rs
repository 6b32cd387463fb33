//! The checks every model's ONNX test makes, written once: an export run in tract on a
//! fixture's `input` against the crate's own forward (float, int8 and QDQ forms) and against
//! PyTorch's int8 logits. Each test states its own bounds on the counts returned.

use burn::tensor::{Device, Tensor};
use burn_qat::export::ExportKind;
use burn_qat::nn::ImageClassifier;
use prost::Message;

use super::common::{Fixture, to_vec};
use super::{dump, quanta, tract_run};

/// Exports `model` as a float graph, runs it in tract on the fixture's `input` and checks it
/// against the crate's float forward (max absolute difference below 1e-4). Returns the bytes.
pub fn check_float_export<M: ImageClassifier>(model: &M, fx: &Fixture, what: &str) -> Vec<u8> {
    let bytes = model.to_onnx(ExportKind::Float).unwrap().encode_to_vec();
    let (x, shape) = (fx.f32("input"), fx.shape("input"));
    let theirs = tract_run(&bytes, &x, &shape);
    let ours = to_vec(model.forward(fx.tensor("input", &Device::flex())));
    let worst = theirs
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("{what} float export: tract vs crate max abs difference {worst:e}");
    assert_eq!(theirs.len(), ours.len(), "{what}");
    assert!(worst < 1e-4, "{what}: {worst}");
    bytes
}

/// Tract on an int8 export against the crate's int8 forward and PyTorch's logits, in output
/// quanta.
pub struct Int8Export {
    /// The exported graph.
    pub bytes: Vec<u8>,
    /// Logits compared.
    pub n: usize,
    /// Tract vs the crate: equal, within one quantum, worst.
    pub crate_equal: usize,
    pub crate_within1: usize,
    pub crate_worst: i64,
    /// Tract vs PyTorch: equal, worst.
    pub pytorch_equal: usize,
    pub pytorch_worst: i64,
}

/// Exports the converted `model` as int8 QDQ, runs it in tract on the fixture's `input`, and
/// compares it with the crate's int8 forward and with PyTorch's quantized logits, the fixture's
/// `{key}` (uint8 as int64), `{key}_scale` and `{key}_zero_point`. `BURN_QAT_ONNX_DUMP` writes
/// the files for onnxruntime under `what`.
pub fn compare_int8_export<M: ImageClassifier>(
    model: &M,
    fx: &Fixture,
    key: &str,
    what: &str,
) -> Int8Export {
    let bytes = model.to_onnx(ExportKind::Int8).unwrap().encode_to_vec();
    let (x, shape) = (fx.f32("input"), fx.shape("input"));
    let theirs = tract_run(&bytes, &x, &shape);
    let input: Tensor<4> = fx.tensor("input", &Device::flex());
    let ours = to_vec(model.forward_int8(input).unwrap());
    let n = ours.len();
    dump(what, &bytes, &x, &shape, &ours, &[shape[0], n / shape[0]]);
    let scale = fx.f32(&format!("{key}_scale"))[0] as f64;
    let zp = fx.i64(&format!("{key}_zero_point"))[0];
    let pytorch: Vec<f32> = fx
        .i64(key)
        .iter()
        .map(|&q| ((q - zp) as f64 * scale) as f32)
        .collect();
    let (crate_equal, crate_within1, crate_worst) = quanta(&theirs, &ours, scale);
    let (pytorch_equal, _, pytorch_worst) = quanta(&theirs, &pytorch, scale);
    println!(
        "{what}: tract vs crate int8 {crate_equal}/{n} equal, {crate_within1}/{n} within 1 \
         quantum, max {crate_worst}; tract vs PyTorch {pytorch_equal}/{n} equal, max \
         {pytorch_worst}"
    );
    Int8Export {
        bytes,
        n,
        crate_equal,
        crate_within1,
        crate_worst,
        pytorch_equal,
        pytorch_worst,
    }
}

/// Exports a QAT-prepared `model` (observers off) with Q/DQ pairs, runs it in tract on the
/// fixture's `input` and compares it with the model's own fake-quant forward in quanta of
/// `scale` (the output fake-quant's): `(equal, within one quantum, worst, n)`.
pub fn compare_qdq_export<M: ImageClassifier>(
    model: &M,
    fx: &Fixture,
    scale: f64,
    what: &str,
) -> (usize, usize, i64, usize) {
    let (x, shape) = (fx.f32("input"), fx.shape("input"));
    let ours = to_vec(model.forward(fx.tensor("input", &Device::flex())));
    let bytes = model
        .to_onnx(ExportKind::FakeQuant)
        .unwrap()
        .encode_to_vec();
    let theirs = tract_run(&bytes, &x, &shape);
    let n = ours.len();
    dump(what, &bytes, &x, &shape, &ours, &[shape[0], n / shape[0]]);
    let (equal, within1, worst) = quanta(&theirs, &ours, scale);
    println!(
        "{what} QAT QDQ export: tract vs fake-quant forward {equal}/{n} equal, {within1}/{n} \
         within 1 quantum, max {worst}"
    );
    (equal, within1, worst, n)
}
