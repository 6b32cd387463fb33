//! ShuffleNetV2 in ONNX: the small torchvision model of `tests/it/shufflenet_v2.rs`
//! (`scripts/gen_shufflenet_v2_fixtures.py`) exported float, int8 (PyTorch's converted state
//! dicts, both engines) and QDQ (a QAT model), and run in tract against the crate's own forward
//! and PyTorch's int8 logits. The channel split is a `Slice` pair, the join a `Concat`, the
//! shuffle `Reshape → Transpose → Reshape`. With `BURN_QAT_ONNX_DUMP=DIR` the graphs go to
//! `scripts/check_onnx.py` (onnxruntime).

use super::*;
use burn_qat::models::{ShuffleNetV2Config, load_quantized_shufflenet_v2, load_shufflenet_v2};
use burn_qat::nn::ImageClassifier;

fn config() -> ShuffleNetV2Config {
    ShuffleNetV2Config::new([2, 1, 2], [8, 16, 32, 64, 128]).with_num_classes(32)
}

fn path(file: &str) -> PathBuf {
    fixture_path(&format!("shufflenet_v2/{file}"))
}

#[test]
fn shufflenet_v2_float_export_matches_the_float_forward() {
    let device = Device::flex();
    let fx = Fixture::load("shufflenet_v2/model.safetensors");
    let model = load_shufflenet_v2(&path("model.pth"), &config(), &device).unwrap();
    let bytes = check_float_export(&model, &fx, "shufflenet_v2");
    let ops = op_counts(&model_of(&bytes));
    assert_eq!((ops["Slice"], ops["Concat"]), (4, 5), "{ops:?}");
}

#[test]
fn shufflenet_v2_int8_export_runs_in_tract_like_the_crate_and_pytorch() {
    let device = Device::flex();
    let fx = Fixture::load("shufflenet_v2/model.safetensors");
    for engine in ["fbgemm", "qnnpack"] {
        let what = format!("shufflenet_v2_{engine}");
        let model = load_quantized_shufflenet_v2(
            &path(&format!("model_{engine}.pth")),
            &config(),
            engine.parse().unwrap(),
            &device,
        )
        .unwrap();
        let r = compare_int8_export(&model, &fx, &format!("q_{engine}_input"), &what);
        // Measured: every logit equal on both engines (the crate equals PyTorch bit for bit,
        // tests/it/shufflenet_v2.rs).
        assert_eq!(
            (r.crate_equal, r.pytorch_equal),
            (r.n, r.n),
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
    let mut model = load_shufflenet_v2(&path("model.pth"), &config(), &device).unwrap();
    model.fuse_model(Some(true)).unwrap();
    prepare_qat(&mut model, QConfig::default_qat(QuantBackend::X86), &device).unwrap();
    let input: Tensor<4> = fx.tensor("input", &device);
    for _ in 0..2 {
        let _ = model.forward(input.clone());
    }
    disable_observer(&mut model);
    let out = model.fc.activation_post_process.fake_quantize().unwrap();
    let scale = out.current_qparams().scale[0] as f64;
    let (_, within1, worst, n) = compare_qdq_export(&model, &fx, scale, "shufflenet_v2_qat");
    assert!(
        within1 * 100 >= n * 99 && worst <= 2,
        "{within1}/{n}, worst {worst}"
    );
}
