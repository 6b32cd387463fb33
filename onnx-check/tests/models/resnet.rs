//! ResNet / ResNeXt in ONNX: the small torchvision models of `tests/it/resnet.rs`
//! (`scripts/gen_resnet_fixtures.py`) exported float and int8 (PyTorch's converted state dicts,
//! both engines) and run in tract against the crate's own forward and PyTorch's int8 logits.
//! With `BURN_QAT_ONNX_DUMP=DIR` the int8 graphs go to `scripts/check_onnx.py` (onnxruntime).

use super::*;
use burn_qat::models::{BlockKind, ResNetConfig, load_quantized_resnet, load_resnet};

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

#[test]
fn resnet_float_export_matches_the_float_forward() {
    let device = Device::flex();
    for name in MODELS {
        let fx = Fixture::load(&format!("resnet/{name}.safetensors"));
        let path = fixture_path(&format!("resnet/{name}.pth"));
        let model = load_resnet(&path, &config(name), &device).unwrap();
        check_float_export(&model, &fx, name);
    }
}

#[test]
fn resnet_int8_export_runs_in_tract_like_the_crate_and_pytorch() {
    let device = Device::flex();
    for name in MODELS {
        let fx = Fixture::load(&format!("resnet/{name}.safetensors"));
        for engine in ["fbgemm", "qnnpack"] {
            let what = format!("{name}_{engine}");
            let path = fixture_path(&format!("resnet/{what}.pth"));
            let model =
                load_quantized_resnet(&path, &config(name), engine.parse().unwrap(), &device)
                    .unwrap();
            let r = compare_int8_export(&model, &fx, &format!("q_{engine}"), &what);
            // Measured: qnnpack exports within one quantum of the crate everywhere (onnxruntime:
            // bit-identical); fbgemm exports 89–97% within one, worst 2 (onnxruntime: worst 3).
            // The crate is bit-identical to PyTorch on both (tests/it/resnet.rs). A difference
            // the QDQ form cannot carry: x86 adds each conv's float bias `b / (s_in·s_w)`
            // unrounded (src/int8/requant.rs), a QDQ graph holds it rounded to int32; how much
            // of the gap that explains is not measured.
            let min_within_one = if engine == "qnnpack" { 1.0 } else { 0.85 };
            assert!(
                r.crate_within1 as f64 >= min_within_one * r.n as f64 && r.crate_worst <= 2,
                "{what}: tract vs crate"
            );
            assert!(r.pytorch_worst <= 2, "{what}: tract vs PyTorch");
        }
    }
}
