//! Malformed, truncated and hostile inputs for every loader of the crate: each must give a clean
//! `Err` whose message says what is wrong (asserted on a distinctive fragment), never a panic
//! and never an allocation sized by a number the file merely declares.
//!
//! One module per loader: float and quantized PyTorch checkpoints (`pth`), `.npy` arrays
//! (`npy`), the crate's int8 safetensors format (`int8_file`) and the datasets (`datasets`:
//! ImageFolder, CIFAR-10 binary, the MNIST CSV reader); and absurd sizes given as flags to the
//! CLI and the main job (`sizes`). Files are small and synthetic, written to temporary
//! directories.

mod datasets;
mod int8_file;
mod npy;
mod pth;
mod sizes;

use std::fmt::Debug;
use std::path::{Path, PathBuf};

/// A temporary directory and a file in it holding `bytes`.
pub fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Asserts that `result` is an error whose message contains every one of `needles`, and
/// returns the message.
#[track_caller]
pub fn expect_err<T: Debug>(result: burn_qat::Result<T>, needles: &[&str]) -> String {
    let msg = match result {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got Ok({})", short(&v)),
    };
    for needle in needles {
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    }
    assert!(!msg.contains('\n'), "the message is not one line: {msg}");
    println!("{msg}");
    msg
}

/// Like [`expect_err`], and the message names `path`.
#[track_caller]
pub fn expect_err_at<T: Debug>(result: burn_qat::Result<T>, path: &Path, needles: &[&str]) {
    let msg = expect_err(result, needles);
    let shown = path.display().to_string();
    assert!(
        msg.contains(&shown),
        "the message does not name {shown}: {msg}"
    );
}

fn short(v: &impl Debug) -> String {
    format!("{v:?}").chars().take(200).collect()
}
