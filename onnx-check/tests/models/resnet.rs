//! ResNet / ResNeXt in ONNX: the small torchvision models of `tests/it/resnet.rs`
//! (`scripts/gen_resnet_fixtures.py`) exported float and int8 (PyTorch's converted state dicts,
//! both engines) and run in tract against the crate's own forward and PyTorch's int8 logits.
//! With `BURN_QAT_ONNX_DUMP=DIR` the int8 graphs go to `scripts/check_onnx.py` (onnxruntime).

use super::*;
use burn_qat::models::{BlockKind, ResNet, ResNetConfig, load_quantized_resnet, load_resnet};
use burn_qat::nn::ImageClassifier;

const MODELS: [&str; 2] = ["resnet_basic", "resnext_bottleneck"];

fn config(name: &str) -> ResNetConfig {
    let config = match name {
        "resnet_basic" => ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1]),
        _ => ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1, 1])
            .with_groups(4)
            .with_width_per_group(16),
    };
    config.with_width(8).with_num_classes(32)
}

fn onnx(model: &ResNet, kind: ExportKind) -> Vec<u8> {
    model.to_onnx(kind).unwrap().encode_to_vec()
}

#[test]
fn resnet_float_export_matches_the_float_forward() {
    let device = Device::flex();
    for name in MODELS {
        let fx = Fixture::load(&format!("resnet/{name}.safetensors"));
        let path = fixture_path(&format!("resnet/{name}.pth"));
        let model = load_resnet(&path, &config(name), &device).unwrap();
        let bytes = onnx(&model, ExportKind::Float);
        let (x, shape) = (fx.f32("input"), fx.shape("input"));
        let theirs = tract_run(&bytes, &x, &shape);
        let ours = to_vec(model.forward(fx.tensor("input", &device)));
        let worst = theirs
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{name} float export: tract vs crate max abs difference {worst:e}");
        assert_eq!(theirs.len(), ours.len());
        assert!(worst < 1e-4, "{name}: {worst}");
    }
}

#[test]
fn resnet_int8_export_runs_in_tract_like_the_crate_and_pytorch() {
    let device = Device::flex();
    for name in MODELS {
        let fx = Fixture::load(&format!("resnet/{name}.safetensors"));
        let (x, shape) = (fx.f32("input"), fx.shape("input"));
        for engine in ["fbgemm", "qnnpack"] {
            let what = format!("{name}_{engine}");
            let path = fixture_path(&format!("resnet/{what}.pth"));
            let model =
                load_quantized_resnet(&path, &config(name), engine.parse().unwrap(), &device)
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
            // Measured: qnnpack exports within one quantum of the crate everywhere (onnxruntime:
            // bit-identical); fbgemm exports 89–97% within one, worst 2 (onnxruntime: worst 3).
            // The crate is bit-identical to PyTorch on both (tests/it/resnet.rs). A difference
            // the QDQ form cannot carry: x86 adds each conv's float bias `b / (s_in·s_w)`
            // unrounded (src/int8/requant.rs), a QDQ graph holds it rounded to int32; how much
            // of the gap that explains is not measured.
            let min_within_one = if engine == "qnnpack" { 1.0 } else { 0.85 };
            assert!(
                w1_c as f64 >= min_within_one * n as f64 && worst_c <= 2,
                "{what}: tract vs crate"
            );
            assert!(worst_p <= 2, "{what}: tract vs PyTorch");
        }
    }
}
