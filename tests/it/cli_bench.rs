//! `burn-qat bench` end to end on small fixtures: the float checkpoint and torchvision int8
//! checkpoints (both engines) run, and the `--json` object parses with sane fields. No timing
//! thresholds: the machine running the tests is unknown, only the report's consistency is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs `bench` on a 2×3×48×48 batch, 1 thread, 1 + 2 passes; `set` replaces or adds options
/// (clap refuses an option given twice), `flags` are appended.
fn bench(weights: &Path, set: &[(&str, &str)], flags: &[&str]) -> Output {
    let mut options = vec![
        ("--width-mult", "0.25"),
        ("--num-classes", "10"),
        ("--input-size", "48"),
        ("--batch", "2"),
        ("--threads", "1"),
        ("--warmup", "1"),
        ("--iters", "2"),
    ];
    for &(key, value) in set {
        match options.iter_mut().find(|(k, _)| *k == key) {
            Some(option) => option.1 = value,
            None => options.push((key, value)),
        }
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_burn-qat"));
    cmd.arg("bench").arg("--weights").arg(weights);
    for (key, value) in options {
        cmd.args([key, value]);
    }
    cmd.args(flags).output().unwrap()
}

/// Runs `bench --json` and checks the object against what was asked for.
fn bench_json(weights: &Path, engine: Option<&str>) {
    let path = if engine.is_some() { "int8" } else { "float" };
    let out = match engine {
        Some(e) => bench(weights, &[("--engine", e)], &["--quantized", "--json"]),
        None => bench(weights, &[], &["--json"]),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["path"], path, "{v}");
    match engine {
        Some(e) => assert_eq!(v["engine"], e, "{v}"),
        None => assert!(v["engine"].is_null(), "{v}"),
    }
    assert_eq!(v["width_mult"].as_f64(), Some(0.25), "{v}");
    assert_eq!(v["num_classes"], 10, "{v}");
    for (key, want) in [
        ("input_size", 48),
        ("batch", 2),
        ("threads", 1),
        ("warmup", 1),
        ("iters", 2),
    ] {
        assert_eq!(v[key], want, "{key}: {v}");
    }
    let median = v["median_ms"].as_f64().unwrap();
    let min = v["min_ms"].as_f64().unwrap();
    let ips = v["images_per_s"].as_f64().unwrap();
    assert!(median >= min && min > 0.0, "{v}");
    assert!((ips - 2.0 * 1000.0 / median).abs() <= 1e-6 * ips, "{v}");
}

#[test]
fn bench_float_and_int8_checkpoints() {
    bench_json(&fixtures().join("mobilenet_v2_w025.pth"), None);
    for engine in ["qnnpack", "x86"] {
        let file = format!("int8_models/mobilenet_v2_{engine}_w025.pth");
        bench_json(&fixtures().join(file), Some(engine));
    }
}

#[test]
fn bench_table_line_and_errors() {
    let weights = fixtures().join("mobilenet_v2_w025.pth");
    let out = bench(&weights, &[], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("float") && stdout.contains("median") && stdout.contains("images/s"),
        "{stdout}"
    );

    // Bad options and a float checkpoint passed as int8: one line on stderr, non-zero exit.
    for (set, flags, needle) in [
        (&[("--iters", "0")][..], &[][..], "--iters"),
        (&[("--input-size", "16")], &[], "32"),
        (&[("--threads", "0")], &[], "--threads"),
        (&[], &["--quantized"], "looks like a float checkpoint"),
        (&[("--device", "tpu")], &[], "unknown device 'tpu'"),
        // int8 runs on the CPU kernels (or, in a build without wgpu, the device is unknown).
        (&[("--device", "wgpu")], &["--quantized"], "wgpu"),
    ] {
        let out = bench(&weights, set, flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set:?} {flags:?}");
        assert!(out.stdout.is_empty(), "{set:?} {flags:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}
