//! torchvision int8 checkpoints on the int8 path: `torchvision.models.quantization.mobilenet_v2`
//! converted by PyTorch (qnnpack per-tensor and x86 per-channel weights, widths 0.25 and 0.5),
//! loaded with this crate's reader and run by [`MobileNetV2::forward_int8`] against the quantized
//! model's output in PyTorch (`scripts/gen_int8_model_fixtures.py`). Also the crate's own int8
//! format: save, reload, same outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::to_vec;
use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::int8::Engine;
use burn_qat::io::{int8_state_dict, load_int8_state_dict};
use burn_qat::io::{read_int8_file, save_int8_file};
use burn_qat::models::{MobileNetV2, MobileNetV2Config, load_quantized_mobilenet_v2};
use burn_qat::nn::ImageClassifier;
use burn_qat::quantize::replace_relu;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/int8_models")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["checkpoints"].as_array().unwrap().clone()
}

fn input(device: &Device) -> Tensor<4> {
    let x = burn_qat::io::npy::read_f32(&dir().join("input.npy")).unwrap();
    let shape: [usize; 4] = x.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(x.data, shape), device)
}

fn expected_q(case: &Value) -> Vec<i64> {
    let file = std::fs::File::open(dir().join(case["output"].as_str().unwrap())).unwrap();
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap();
    npy.into_vec::<u8>()
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect()
}

fn config(case: &Value) -> MobileNetV2Config {
    MobileNetV2Config::new()
        .with_width_mult(case["width_mult"].as_f64().unwrap())
        .with_num_classes(10)
}

/// The model's int8 logits as quint8 integers of the output qparams.
fn run_q(model: &MobileNetV2, case: &Value, device: &Device) -> Vec<i64> {
    let scale: f64 = case["output_scale"].as_str().unwrap().parse().unwrap();
    let zp = case["output_zero_point"].as_i64().unwrap();
    let y = to_vec(model.forward_int8(input(device)).unwrap());
    y.iter()
        .map(|&v| (v as f64 / scale).round() as i64 + zp)
        .collect()
}

#[test]
fn torchvision_int8_checkpoints_match_pytorch() {
    let device = Device::flex();
    for case in manifest() {
        let file = case["file"].as_str().unwrap();
        if !file.starts_with("mobilenet_v2") {
            continue;
        }
        let engine: Engine = case["output_engine"].as_str().unwrap().parse().unwrap();
        let config = config(&case);
        let mut files = vec![file.to_string()];
        if let Some(legacy) = case["legacy_file"].as_str() {
            files.push(legacy.to_string());
        }
        for f in files {
            let model = load_quantized_mobilenet_v2(&dir().join(&f), &config, engine, &device)
                .unwrap_or_else(|e| panic!("{f}: {e}"));
            let ours = run_q(&model, &case, &device);
            let expected = expected_q(&case);
            let equal = ours.iter().zip(&expected).filter(|(a, b)| a == b).count();
            let worst = ours
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .max()
                .unwrap();
            println!("{f}: {equal}/{} outputs bit-identical", ours.len());
            assert!(
                equal * 100 >= ours.len() * 99 && worst <= 1,
                "{f}: {equal}/{} equal, worst {worst} quanta\nours     {ours:?}\nexpected {expected:?}",
                ours.len()
            );
        }
    }
}

#[test]
fn int8_model_file_round_trips() {
    let device = Device::flex();
    let case = manifest()
        .into_iter()
        .find(|c| c["file"] == "mobilenet_v2_x86_w025.pth")
        .unwrap();
    let config = config(&case);
    let model = load_quantized_mobilenet_v2(
        &dir().join("mobilenet_v2_x86_w025.pth"),
        &config,
        Engine::X86,
        &device,
    )
    .unwrap();
    let before = run_q(&model, &case, &device);
    let state = int8_state_dict(&model).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.int8.safetensors");
    save_int8_file(&path, &state, "x86", &BTreeMap::new()).unwrap();
    let (loaded, metadata) = read_int8_file(&path).unwrap();
    assert_eq!(metadata["engine"], "x86");
    assert_eq!(loaded, state, "the state dict survives the file");
    let mut fresh = config.init(&device).unwrap();
    replace_relu(&mut fresh).unwrap();
    load_int8_state_dict(&mut fresh, &loaded, Engine::X86).unwrap();
    assert_eq!(run_q(&fresh, &case, &device), before);
}

#[test]
fn int8_checkpoint_errors_name_the_key() {
    let device = Device::flex();
    let path = dir().join("mobilenet_v2_qnnpack_w025.pth");
    // Wrong width: shapes differ.
    let wide = MobileNetV2Config::new()
        .with_width_mult(0.5)
        .with_num_classes(10);
    let err = load_quantized_mobilenet_v2(&path, &wide, Engine::Qnnpack, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("features.0.0.weight") && err.contains("shape"),
        "{err}"
    );
    // A missing output scale.
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10);
    let model = load_quantized_mobilenet_v2(&path, &config, Engine::Qnnpack, &device).unwrap();
    let mut state = int8_state_dict(&model).unwrap();
    state.remove("blocks.3.skip_add.scale");
    let mut fresh = config.init(&device).unwrap();
    replace_relu(&mut fresh).unwrap();
    let err = load_int8_state_dict(&mut fresh, &state, Engine::Qnnpack)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `blocks.3.skip_add.scale`"), "{err}");
    // Nothing was loaded: the model still refuses to run int8.
    let x = Tensor::<4>::zeros([1, 3, 32, 32], &device);
    assert!(fresh.forward_int8(x).is_err());
}

/// Convert a width-1.0, 1000-class MobileNetV2 (PTQ, one calibration batch) and save it: int8
/// weights stay int8 on disk. Limits: 3.6 MB for qnnpack (per-tensor; torchvision's official
/// int8 checkpoint is 3.4 MB, and PyTorch's `state_dict()` of this same model is 3,627,650
/// bytes); for x86 (per-channel scales), PyTorch's own file of the same model, 3,944,046 bytes
/// (measured with torch 2.5.1).
#[test]
fn width_1_int8_model_file_is_small() {
    use burn::module::Module;
    use burn_qat::convert::convert;
    use burn_qat::io::save_int8_model;
    use burn_qat::quant::{QConfig, QuantBackend};
    use burn_qat::quantize::prepare;

    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    for backend in [QuantBackend::Qnnpack, QuantBackend::X86] {
        let mut model = MobileNetV2Config::new().init(&device).unwrap().valid();
        replace_relu(&mut model).unwrap();
        model.fuse_model(Some(false)).unwrap();
        prepare(&mut model, QConfig::default_ptq(backend), &device).unwrap();
        let _ = model.forward(Tensor::<4>::random(
            [1, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        ));
        convert(&mut model, Engine::from_backend(backend).unwrap()).unwrap();
        let path = tmp.path().join("w1.int8.safetensors");
        save_int8_model(&model, &path, &BTreeMap::new()).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        println!("{backend:?}: width-1.0 int8 model file {size} bytes");
        let limit = match backend {
            QuantBackend::Qnnpack => 3_600_000,
            _ => 3_944_046,
        };
        assert!(size <= limit, "{backend:?}: {size} bytes");
    }
}

/// `burn-qat infer --quantized`: a torchvision int8 checkpoint, and the same model saved in the
/// crate's format, give PyTorch's quantized logits (dequantized); errors are one line.
#[test]
fn cli_infer_quantized() {
    let case = manifest()
        .into_iter()
        .find(|c| c["file"] == "mobilenet_v2_qnnpack_w050.pth")
        .unwrap();
    let scale: f64 = case["output_scale"].as_str().unwrap().parse().unwrap();
    let zp = case["output_zero_point"].as_i64().unwrap();
    let expected: Vec<f32> = expected_q(&case)
        .iter()
        .map(|&q| ((q - zp) as f64 * scale) as f32)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join("w050.int8.safetensors");
    let device = Device::flex();
    let model = load_quantized_mobilenet_v2(
        &dir().join("mobilenet_v2_qnnpack_w050.pth"),
        &config(&case),
        Engine::Qnnpack,
        &device,
    )
    .unwrap();
    burn_qat::io::save_int8_model(&model, &own, &BTreeMap::new()).unwrap();
    let output = tmp.path().join("y.npy");
    let infer = |weights: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_burn-qat"))
            .args(["infer", "--quantized", "--engine", "qnnpack", "--weights"])
            .arg(weights)
            .args(["--width-mult", "0.5", "--num-classes", "10", "--input"])
            .arg(dir().join("input.npy"))
            .arg("--output")
            .arg(&output)
            .output()
            .unwrap()
    };
    for weights in [dir().join("mobilenet_v2_qnnpack_w050.pth"), own] {
        let out = infer(&weights);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let y = burn_qat::io::npy::read_f32(&output).unwrap();
        assert_eq!(y.shape, vec![2, 10]);
        for (a, e) in y.data.iter().zip(&expected) {
            assert!((a - e).abs() <= 1e-6, "{}: {a} vs {e}", weights.display());
        }
    }
    // A float checkpoint passed as int8: one clear line, non-zero exit.
    let float =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mobilenet_v2_w050.pth");
    let out = infer(&float);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("looks like a float checkpoint"), "{stderr}");
}
