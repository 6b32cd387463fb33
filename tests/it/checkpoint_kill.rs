//! Training safety, end to end on the shortened QAT pipeline (`finetune::run`, as
//! `examples/qat_finetune.rs` runs it, on a few batches of a width-0.25 MobileNetV2):
//!
//! - a run killed with SIGKILL in the middle of writing a checkpoint resumes (`resume`) from the
//!   last complete checkpoint and ends with the int8 model an uninterrupted run gives, bit for
//!   bit (each run in its own process: this test binary runs itself as the child, with a filter
//!   that selects `child_training_run` only);
//! - a second run in the same output directory, while the first is in the middle of a
//!   checkpoint write, is refused with the first run's pid, and leaves the first run's files
//!   alone;
//! - a loss or model that becomes non-finite stops training with an error naming the epoch and
//!   the last good checkpoint, which stays intact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::recipes::short_recipe;
use burn::tensor::Device;
use burn_qat::finetune::{FinetuneConfig, FinetuneData, run};
use burn_qat::io::atomic::PAUSE_ENV;
use burn_qat::io::read_int8_file;

const OUT_ENV: &str = "BURN_QAT_TEST_CHILD_OUT";
const RESUME_ENV: &str = "BURN_QAT_TEST_CHILD_RESUME";

fn config() -> FinetuneConfig {
    short_recipe().with_width_mult(0.25)
}

/// The training run of a child process (run by the tests below, not on its own).
#[test]
#[ignore = "the child process of `killed_mid_checkpoint_write_resumes_to_the_same_model`"]
fn child_training_run() {
    let Some(out) = std::env::var_os(OUT_ENV) else {
        return;
    };
    let resume = std::env::var_os(RESUME_ENV).is_some();
    let data = FinetuneData::embedded_mnist().unwrap();
    let device = Device::flex().autodiff();
    // The error's message (not its Debug form) goes to stderr, for the tests to read.
    if let Err(e) = run(&config(), &data, None, Path::new(&out), resume, &device) {
        panic!("{e}");
    }
}

/// Starts this test binary as a child training into `out`.
fn spawn(out: &Path, resume: bool, pause: Option<&str>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    let name = crate::test_name(module_path!(), "child_training_run");
    cmd.args([name.as_str(), "--exact", "--ignored", "--nocapture"])
        .env(OUT_ENV, out)
        .env_remove(PAUSE_ENV)
        .env_remove(RESUME_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if resume {
        cmd.env(RESUME_ENV, "1");
    }
    if let Some(fragment) = pause {
        cmd.env(PAUSE_ENV, fragment);
    }
    cmd.spawn().unwrap()
}

/// Waits for a child to finish successfully; returns its stdout.
fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The filter selected the child test (a filter that selects nothing also exits with 0).
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{what}: {stdout}"
    );
    stdout
}

/// Temporary files the atomic writer left in `dir` for `name`.
fn temps(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!(".{name}.tmp-");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// Waits until `child` is halfway through writing `name` in `out` (the pause hook holds it
/// there for a minute) and returns the half-written temporary file.
fn half_written(out: &Path, name: &str, child: &mut Child) -> PathBuf {
    let start = Instant::now();
    loop {
        let half_written = temps(out, name)
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if let Some(p) = half_written {
            return p;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child ended ({status}) before writing the checkpoint");
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "no checkpoint write after 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_mid_checkpoint_write_resumes_to_the_same_model() {
    // The reference: one uninterrupted run.
    let reference = tempfile::tempdir().unwrap();
    finish(
        spawn(reference.path(), false, None),
        "the uninterrupted run",
    );

    // A run that pauses halfway through writing its second (last) epoch checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut child = spawn(out, false, Some("qat_epoch1.bpk"));
    let partial = half_written(out, "qat_epoch1.bpk", &mut child);
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    // The kill left the half-written temporary file; the checkpoint itself was never there.
    assert!(partial.is_file());
    assert!(out.join("qat_epoch0.bpk").is_file());
    assert!(!out.join("qat_epoch1.bpk").exists());
    let epoch0 = std::fs::read(out.join("qat_epoch0.bpk")).unwrap();

    // Resuming continues after epoch 1, cleans up, and ends where the uninterrupted run did.
    let log = finish(spawn(out, true, None), "the resumed run");
    assert!(log.contains("resuming after epoch 1/2"), "{log}");
    assert!(!log.contains("epoch 1/2: loss"), "epoch 1 ran again: {log}");
    assert!(temps(out, "qat_epoch1.bpk").is_empty());
    assert_eq!(std::fs::read(out.join("qat_epoch0.bpk")).unwrap(), epoch0);
    let file = "mobilenet_v2_qat.int8.safetensors";
    let (resumed, _) = read_int8_file(&out.join(file)).unwrap();
    let (uninterrupted, _) = read_int8_file(&reference.path().join(file)).unwrap();
    assert!(
        resumed == uninterrupted,
        "the resumed run's int8 model differs from the uninterrupted run's"
    );
}

#[test]
fn a_second_run_in_the_same_output_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    // The first run, held for a minute halfway through writing its first checkpoint.
    let mut first = spawn(out, false, Some("qat_epoch0.bpk"));
    let partial = half_written(out, "qat_epoch0.bpk", &mut first);

    // A second one in the same directory, resuming (which cleans up killed runs' temporary
    // files): refused at once, naming the directory and the first run's pid.
    let second = spawn(out, true, None).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second run was not refused:\n{}",
        String::from_utf8_lossy(&second.stdout)
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("is using this output directory"))
        .unwrap_or_else(|| panic!("no refusal in the second run's stderr:\n{stderr}"));
    assert!(line.contains(&out.display().to_string()), "{line}");
    assert!(line.contains(&format!("pid {}", first.id())), "{line}");
    // It left the first run's half-written file alone.
    assert!(
        partial.is_file(),
        "the second run removed {}",
        partial.display()
    );

    // The first run finishes, its checkpoints and int8 model whole.
    let log = finish(first, "the first run");
    assert!(log.contains("epoch 2/2: loss"), "{log}");
    for epoch in 0..2 {
        assert!(out.join(format!("qat_epoch{epoch}.bpk")).is_file());
        assert!(temps(out, &format!("qat_epoch{epoch}.bpk")).is_empty());
    }
    read_int8_file(&out.join("mobilenet_v2_qat.int8.safetensors")).unwrap();

    // Its lock ended with it: a run resuming there now goes ahead.
    let log = finish(spawn(out, true, None), "the run after the first");
    assert!(log.contains("resuming after epoch 2/2"), "{log}");
}

#[test]
fn non_finite_training_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let data = FinetuneData::embedded_mnist().unwrap();
    let device = Device::flex().autodiff();
    // One good epoch.
    run(&config().with_epochs(1), &data, None, out, false, &device).unwrap();
    let good = out.join("qat_epoch0.bpk");
    let before = std::fs::read(&good).unwrap();
    // Then a learning rate that overflows f32: the weights become infinite after one step.
    let err = run(&config().with_lr(1e300), &data, None, out, true, &device)
        .unwrap_err()
        .to_string();
    println!("{err}");
    for needle in [
        "training stopped",
        "epoch 2/2",
        "non-finite",
        "the last good checkpoint is",
        "qat_epoch0.bpk (after epoch 1/2)",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the good checkpoint changed"
    );
    assert!(!out.join("qat_epoch1.bpk").exists());
    assert!(temps(out, "qat_epoch1.bpk").is_empty());
}
