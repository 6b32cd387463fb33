//! MobileNetV2 against torchvision: logits of loaded checkpoints, and clear errors for bad
//! checkpoints and inputs. Expected values come from `scripts/gen_fixtures.py`.

use std::path::Path;
use std::process::Command;

use crate::common::{Fixture, assert_close, fixture_path, to_vec};
use burn::tensor::{Device, Tensor};
use burn_qat::io::npy;
use burn_qat::models::{MobileNetV2Config, load_mobilenet_v2};
use burn_qat::nn::ImageClassifier;

fn config(width_mult: f64) -> MobileNetV2Config {
    MobileNetV2Config::new()
        .with_width_mult(width_mult)
        .with_num_classes(10)
}

fn check_logits(name: &str, width_mult: f64) {
    let device = Device::flex();
    let fixture = Fixture::load(&format!("{name}.safetensors"));
    let model = load_mobilenet_v2(
        &fixture_path(&format!("{name}.pth")),
        &config(width_mult),
        &device,
    )
    .unwrap();
    let x: Tensor<4> = fixture.tensor("input", &device);
    let logits = to_vec(model.forward(x));
    assert_close(&logits, &fixture.f32("logits"), 1e-4, 1e-4, name);
}

#[test]
fn width_025_legacy_checkpoint_non_square_batch_matches_torchvision() {
    check_logits("mobilenet_v2_w025", 0.25);
}

#[test]
fn width_050_zip_checkpoint_matches_torchvision() {
    check_logits("mobilenet_v2_w050", 0.5);
}

fn load_err(path: &Path, width_mult: f64) -> String {
    load_mobilenet_v2(path, &config(width_mult), &Device::flex())
        .expect_err("loading must fail")
        .to_string()
}

#[test]
fn checkpoint_of_another_width_names_the_key() {
    let err = load_err(&fixture_path("mobilenet_v2_w025.pth"), 0.5);
    assert!(err.contains("does not match the model"), "{err}");
    // The stem has 8 channels at width 0.25 and 16 at width 0.5.
    assert!(
        err.contains("'features.0.0.weight' has shape [8, 3, 3, 3]"),
        "{err}"
    );
    assert!(err.contains("expects [16, 3, 3, 3]"), "{err}");
}

#[test]
fn wrong_class_count_names_the_classifier() {
    let path = fixture_path("mobilenet_v2_w025.pth");
    let cfg = config(0.25).with_num_classes(5);
    let err = load_mobilenet_v2(&path, &cfg, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(err.contains("'classifier.1.weight'"), "{err}");
}

#[test]
fn truncated_and_garbage_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["mobilenet_v2_w025.pth", "mobilenet_v2_w050.pth"] {
        let bytes = std::fs::read(fixture_path(name)).unwrap();
        let truncated = dir.path().join(format!("truncated_{name}"));
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let width = if name.contains("025") { 0.25 } else { 0.5 };
        let err = load_err(&truncated, width);
        assert!(err.contains(&truncated.display().to_string()), "{err}");
        assert!(err.contains("not a readable PyTorch checkpoint"), "{err}");
    }
    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    let err = load_err(&garbage, 0.25);
    assert!(err.contains("not a readable PyTorch checkpoint"), "{err}");

    let err = load_err(&dir.path().join("absent.pth"), 0.25);
    assert!(err.contains("absent.pth"), "{err}");
}

fn burn_qat(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_burn-qat"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_infer_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::load("mobilenet_v2_w025.safetensors");
    let x = dir.path().join("x.npy");
    let y = dir.path().join("y.npy");
    npy::write_f32(&x, &fixture.f32("input"), &fixture.shape("input")).unwrap();
    let weights = fixture_path("mobilenet_v2_w025.pth");
    let weights = weights.to_str().unwrap();
    let (x, y) = (x.to_str().unwrap(), y.to_str().unwrap());
    let args = |input: &str| {
        [
            "infer",
            "--weights",
            weights,
            "--width-mult",
            "0.25",
            "--num-classes",
            "10",
            "--input",
            input,
            "--output",
            y,
        ]
        .map(String::from)
    };

    let (ok, stderr) = burn_qat(&args(x).each_ref().map(String::as_str));
    assert!(ok, "{stderr}");
    let out = npy::read_f32(Path::new(y)).unwrap();
    assert_eq!(out.shape, vec![2, 10]);
    assert_close(&out.data, &fixture.f32("logits"), 1e-4, 1e-4, "CLI logits");

    // The same on the GPU backend (`--device`), where the build and the machine have one.
    if crate::common::gpu_device().is_some() {
        let name = std::env::var("BURN_QAT_GPU_DEVICE").unwrap_or_else(|_| "wgpu".into());
        let mut gpu = args(x).to_vec();
        gpu.extend(["--device".to_string(), name]);
        let (ok, stderr) = burn_qat(&gpu.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{stderr}");
        let out = npy::read_f32(Path::new(y)).unwrap();
        assert_close(
            &out.data,
            &fixture.f32("logits"),
            1e-4,
            1e-4,
            "CLI logits on the GPU",
        );
    }

    // Wrong rank: one clear line, non-zero exit, output untouched.
    let rank3 = dir.path().join("rank3.npy");
    npy::write_f32(&rank3, &vec![0.0; 3 * 64 * 64], &[3, 64, 64]).unwrap();
    std::fs::remove_file(y).unwrap();
    let (ok, stderr) = burn_qat(&args(rank3.to_str().unwrap()).each_ref().map(String::as_str));
    assert!(!ok);
    assert!(stderr.contains("rank 3"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!Path::new(y).exists());

    // Wrong dtype and a file that is not .npy at all.
    let f64_npy = dir.path().join("f64.npy");
    std::fs::write(&f64_npy, npy_f64_header()).unwrap();
    let (ok, stderr) = burn_qat(
        &args(f64_npy.to_str().unwrap())
            .each_ref()
            .map(String::as_str),
    );
    assert!(!ok && stderr.contains("float32"), "{stderr}");
    let (ok, stderr) = burn_qat(&args(weights).each_ref().map(String::as_str));
    assert!(!ok && stderr.contains("not a valid .npy file"), "{stderr}");
}

/// A tiny valid float64 `.npy` file (header written by hand per the NPY 1.0 spec).
fn npy_f64_header() -> Vec<u8> {
    let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(1.0f64.to_le_bytes());
    bytes
}
