//! Absurd sizes and values given on the command line: `burn-qat infer|bench` and the main job
//! (`examples/qat_finetune`) refuse each with one line naming the flag, at once, before any
//! allocation or training — never an allocation abort, a panic or a hang.
//!
//! The memory the checks compare with is capped by `BURN_QAT_MEMORY_LIMIT` (8 GiB here), so
//! the cases refused are the same on a machine of any size.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use burn_qat::data::{Image, ImageDataset};
use burn_qat::finetune::{FinetuneConfig, FinetuneData};
use burn_qat::models::MobileNetV2Config;

const MEMORY_LIMIT: &str = "8589934592";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The `qat_finetune` example, which `cargo test` builds beside the test binaries.
fn qat_finetune() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("qat_finetune{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test` (which builds the examples) or build \
         it with `cargo build --example qat_finetune`",
        path.display()
    );
    path
}

/// Runs `program args`, which must fail within 60 s (a size check, not a computation).
fn run_fails(program: &Path, args: &[&str]) -> String {
    let start = Instant::now();
    let Output { status, stderr, .. } = Command::new(program)
        .args(args)
        .env(burn_qat::limits::MEMORY_LIMIT_ENV, MEMORY_LIMIT)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert_eq!(
        status.code(),
        Some(1),
        "{args:?} did not fail cleanly: {stderr}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{args:?} took {:?} to fail",
        start.elapsed()
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("warning"))
        .collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    lines[0].to_string()
}

#[track_caller]
fn assert_names(msg: &str, needles: &[&str]) {
    for needle in needles {
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    }
}

fn burn_qat_fails(args: &[&str]) -> String {
    run_fails(Path::new(env!("CARGO_BIN_EXE_burn-qat")), args)
}

#[test]
fn huge_models_are_refused_by_infer_and_bench() {
    let weights = fixture("mobilenet_v2_w025.pth");
    let input = fixture("int8_models/input.npy");
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("y.npy");
    let (w, i, o) = (
        weights.to_str().unwrap(),
        input.to_str().unwrap(),
        output.to_str().unwrap(),
    );
    let infer = ["infer", "--weights", w, "--input", i, "--output", o];
    for (extra, needles) in [
        (
            &["--width-mult", "1e9"][..],
            &["--width-mult 1000000000", "too large a MobileNetV2"][..],
        ),
        (
            &["--width-mult", "1e9", "--quantized"],
            &["--width-mult 1000000000", "too large"],
        ),
        (
            &["--num-classes", "100000000000"],
            &["--num-classes 100000000000", "too large"],
        ),
        (
            &["--num-classes", "18446744073709551615"],
            &["--num-classes 18446744073709551615", "overflows"],
        ),
    ] {
        let args: Vec<&str> = infer.iter().chain(extra).copied().collect();
        assert_names(&burn_qat_fails(&args), needles);
        let mut bench = vec!["bench", "--weights", w, "--iters", "1"];
        bench.extend(extra);
        assert_names(&burn_qat_fails(&bench), needles);
    }
    assert!(!output.exists(), "a failed run wrote its output");
}

#[test]
fn huge_batches_inputs_and_thread_counts_are_refused_by_bench() {
    let weights = fixture("mobilenet_v2_w025.pth");
    let w = weights.to_str().unwrap();
    let model = [
        "--weights",
        w,
        "--width-mult",
        "0.25",
        "--num-classes",
        "10",
    ];
    for (extra, needles) in [
        (
            &["--batch", "100000000"][..],
            &["--batch 100000000", "GiB available"][..],
        ),
        (
            &["--input-size", "100000"],
            &["--input-size 100000", "too large"],
        ),
        (
            &["--input-size", "4294967296", "--batch", "4294967296"],
            &["--batch 4294967296 --input-size 4294967296", "overflows"],
        ),
        (
            &["--threads", "100000"],
            &["--threads 100000", "logical CPUs"],
        ),
    ] {
        let mut args = vec!["bench"];
        args.extend(model);
        args.extend(extra);
        assert_names(&burn_qat_fails(&args), needles);
    }
}

/// The main job's flags are refused before any data is read or any epoch is trained, each
/// as one line (not the `Error: Io { .. }` debug form), naming the flag.
#[test]
fn qat_finetune_refuses_bad_flags_at_once() {
    let exe = qat_finetune();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let one_class = tempfile::tempdir().unwrap();
    let class = one_class.path().join("only");
    std::fs::create_dir(&class).unwrap();
    for i in 0..2 {
        image::RgbImage::from_pixel(8, 8, image::Rgb([i * 100, 50, 9]))
            .save(class.join(format!("{i}.png")))
            .unwrap();
    }
    let data = one_class.path().to_str().unwrap();
    for (args, needles) in [
        (&["--lr", "-1"][..], &["--lr -1", "positive"][..]),
        (&["--lr", "NaN"], &["--lr NaN"]),
        (&["--epochs", "0"], &["--epochs 0"]),
        (&["--max-batches", "0"], &["--max-batches 0"]),
        (&["--observer-off-epoch", "0"], &["--observer-off-epoch 0"]),
        (&["--batch-size", "0"], &["--batch-size 0"]),
        (&["--width-mult", "-2"], &["--width-mult -2"]),
        (
            &["--data", data, "--input-size", "0"],
            &["--input-size 0", "32"],
        ),
        (
            &["--data", data, "--input-size", "100000"],
            &["--input-size 100000", "too large"],
        ),
        (
            &["--data", "/nonexistent/burn-qat-data"],
            &["/nonexistent/burn-qat-data", "No such file"],
        ),
    ] {
        let mut all = vec!["--out", out_dir];
        all.extend(args);
        let msg = run_fails(&exe, &all);
        assert_names(&msg, needles);
        assert!(!msg.contains("Io {"), "debug output: {msg}");
    }
    // Nothing was trained or written.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn library_checks_name_the_value() {
    let device = Device::flex();
    let err = MobileNetV2Config::new()
        .with_width_mult(1e9)
        .init(&device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("width_mult 1000000000"), "{err}");
    let err = MobileNetV2Config::new()
        .with_num_classes(usize::MAX)
        .init(&device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("overflows"), "{err}");
    let image = Image {
        pixels: vec![0; 3 * 4 * 4],
        height: 4,
        width: 4,
        channels: 3,
    };
    let data = ImageDataset {
        images: vec![image; 2],
        labels: vec![0, 0],
        classes: vec!["only".into()],
    };
    let err = FinetuneData::fitted(data.clone(), data.clone(), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--input-size 0"), "{err}");
    let err = FinetuneConfig::new()
        .with_weight_bits(9)
        .validate_recipe()
        .unwrap_err()
        .to_string();
    assert!(err.contains("--weight-bits 9"), "{err}");
    let fitted = FinetuneData::fitted(data.clone(), data, 32).unwrap();
    let warnings = fitted.warnings();
    assert!(
        warnings.len() == 1 && warnings[0].contains("only one class"),
        "{warnings:?}"
    );
    for (config, flag) in [
        (FinetuneConfig::new().with_lr(-1.0), "--lr -1"),
        (FinetuneConfig::new().with_epochs(0), "--epochs 0"),
        (
            FinetuneConfig::new().with_max_batches(Some(0)),
            "--max-batches 0",
        ),
        (
            FinetuneConfig::new().with_observer_off_epoch(0),
            "--observer-off-epoch 0",
        ),
    ] {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(flag), "{err}");
    }
    assert!(FinetuneConfig::new().validate().is_ok());
}
