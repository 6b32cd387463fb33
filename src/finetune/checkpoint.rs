//! Epoch checkpoints of the QAT run, of any model: written atomically (model and optimizer
//! state), refused when the model has gone non-finite, found and loaded again by `resume`; and
//! the lock that keeps a second run out of a run's output directory.

use std::fs::{File, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bytes, DType};
use burn_store::{BurnpackStore, ModuleSnapshot};

use crate::io::atomic::write_atomic_bytes;
use crate::quantize::commit_running_state;
use crate::state::switch::is_switch_entry;
use crate::{Error, Result};

/// `model` as burnpack bytes (the checkpoint format), pending running-state updates included.
pub(super) fn model_bytes<M: Module>(model: &M, path: &Path) -> Result<Vec<u8>> {
    commit_running_state(model);
    let mut store = BurnpackStore::from_bytes(None);
    let bytes = model
        .save_into(&mut store)
        .map_err(|e| e.to_string())
        .and_then(|()| store.get_bytes().map_err(|e| e.to_string()))
        .map_err(|e| Error::io(path, std::io::Error::other(format!("serializing: {e}"))))?;
    Ok(bytes.to_vec())
}

/// The first float tensor of `model` (weights, batch-norm statistics, fake-quant scales and
/// zero points) that holds a NaN or an infinity, by name. Observer ranges are not checked: an
/// observer that has seen nothing yet holds (+inf, -inf), as PyTorch's do.
fn first_non_finite<M: Module>(model: &M) -> Option<String> {
    model.collect(None, None, false).into_iter().find_map(|t| {
        let observer = [".min_val", ".max_val", ".histogram"]
            .iter()
            .any(|s| t.name.ends_with(s));
        let bytes = match t.dtype {
            DType::F32 if !observer => t.to_bytes().ok()?,
            _ => return None,
        };
        let bad = bytes
            .chunks_exact(4)
            .any(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite());
        bad.then(|| t.name.clone())
    })
}

/// The files of the checkpoint after epoch `epoch` (0-based): the model (written last: its
/// presence marks the checkpoint complete) and the optimizer state (momentum).
fn checkpoint_paths(out: &Path, epoch: usize) -> (PathBuf, PathBuf) {
    (
        out.join(format!("qat_epoch{epoch}.bpk")),
        out.join(format!("qat_epoch{epoch}.optim.bpk")),
    )
}

/// Where training stands for error messages: the last complete checkpoint, if any.
pub(super) fn last_good(out: &Path, epochs: usize) -> String {
    match last_checkpoint(out, epochs) {
        Some((e, path)) => format!(
            "the last good checkpoint is {} (after epoch {}/{epochs}); fix the cause (e.g. a \
             lower --lr) and continue with --resume",
            path.display(),
            e + 1
        ),
        None => "no epoch checkpoint had been written yet".to_string(),
    }
}

/// Saves the checkpoint after `epoch`: optimizer state, then the model, each atomically. A
/// model with a non-finite tensor is not saved: training stops with an error instead, and the
/// previous checkpoint stays the last one.
pub(super) fn save_checkpoint<M: Module>(
    model: &M,
    optim: &ModuleOptimizer,
    out: &Path,
    epoch: usize,
    epochs: usize,
) -> Result<()> {
    if let Some(name) = first_non_finite(model) {
        return Err(Error::Training(format!(
            "after epoch {}/{epochs}, `{name}` holds NaN or infinite values (non-finite \
             weights or fake-quant scales); {}",
            epoch + 1,
            last_good(out, epochs)
        )));
    }
    let (model_path, optim_path) = checkpoint_paths(out, epoch);
    let optim_bytes = optim.into_bytes().map_err(|e| {
        Error::io(
            &optim_path,
            std::io::Error::other(format!("serializing: {e}")),
        )
    })?;
    write_atomic_bytes(&optim_path, &optim_bytes)?;
    write_atomic_bytes(&model_path, &model_bytes(model, &model_path)?)
}

/// Loads the checkpoint after `epoch` into `model` and `optim` (the optimizer state, when its
/// file is there: checkpoints of older versions have none, and momentum then restarts).
pub(super) fn load_checkpoint<M: Module>(
    model: &mut M,
    optim: ModuleOptimizer,
    out: &Path,
    epoch: usize,
) -> Result<ModuleOptimizer> {
    let (model_path, optim_path) = checkpoint_paths(out, epoch);
    let bad = |path: &Path, reason: String| Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = crate::io::read_file(&model_path, u64::MAX)?;
    // Missing entries are counted below (burn-store would list them all in one error).
    let mut store =
        BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes))).allow_partial(true);
    let applied = model.load_from(&mut store).map_err(|e| {
        bad(
            &model_path,
            format!("cannot resume from this QAT checkpoint: {e}"),
        )
    })?;
    // Checkpoints written before the QAT switches were saved lack them: the fresh model's
    // (observers and fake-quant on, batch norm training) stay, and the epoch schedule sets them
    // at the next epoch, as the run that wrote them did.
    let missing = applied.missing.iter();
    let missing = missing.filter(|(path, _)| !is_switch_entry(path)).count();
    if !(missing == 0 && applied.unused.is_empty() && applied.errors.is_empty()) {
        return Err(bad(
            &model_path,
            format!(
                "the QAT checkpoint does not fit this model ({} missing, {} unused, {} \
                 mis-shaped tensors): another model, width, class count or backend?",
                missing,
                applied.unused.len(),
                applied.errors.len()
            ),
        ));
    }
    if !optim_path.is_file() {
        println!(
            "{} is missing: the optimizer's momentum restarts",
            optim_path.display()
        );
        return Ok(optim);
    }
    let bytes = crate::io::read_file(&optim_path, u64::MAX)?;
    optim
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| bad(&optim_path, format!("not an optimizer state: {e}")))
}

/// The last complete epoch checkpoint in `out`, if any.
pub(super) fn last_checkpoint(out: &Path, epochs: usize) -> Option<(usize, PathBuf)> {
    (0..epochs)
        .rev()
        .map(|e| (e, out.join(format!("qat_epoch{e}.bpk"))))
        .find(|(_, p)| p.is_file())
}

/// The lock file a run holds in its output directory (it stays there; only the lock on it is
/// released).
pub(super) const LOCK_FILE: &str = ".burn-qat.lock";

/// An exclusive lock on a run's output directory, held until dropped. The operating system
/// releases it when the process ends, however it ends (`kill -9` included), so it never goes
/// stale.
#[derive(Debug)]
pub(super) struct OutLock {
    _file: Option<File>,
}

/// Locks `out` for this run: [`LOCK_FILE`] in it, locked exclusively (`File::try_lock`) and
/// holding this process's pid. A directory another run holds is refused with an error naming
/// the directory and that run's pid: two runs in one directory would overwrite each other's
/// checkpoints (and a resumed one would clean up the other's files in the middle of a write).
/// On a file system without file locks, the run goes on unlocked, with a warning.
pub(super) fn lock_out(out: &Path) -> Result<OutLock> {
    let path = out.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false) // the pid in it is the holder's until the lock is ours
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&file).take(64).read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("another run (pid {pid})"),
                Err(_) => "another run".to_string(),
            };
            return Err(Error::io(
                out,
                io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "{holder} is using this output directory (it holds the lock on \
                         {LOCK_FILE}); wait for it to end, or choose another output directory"
                    ),
                ),
            ));
        }
        Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            eprintln!(
                "warning: {}: file locks are not supported here; another run in this \
                 directory would not be detected",
                path.display()
            );
            return Ok(OutLock { _file: None });
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    (|| {
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()
    })()
    .map_err(|e| Error::io(&path, e))?;
    Ok(OutLock { _file: Some(file) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{MobileNetV2, MobileNetV2Config};
    use crate::quant::{QConfig, QuantBackend};
    use crate::quantize::{
        disable_observer, for_each_batch_norm, for_each_fake_quant, freeze_bn_stats, prepare_qat,
        replace_relu,
    };
    use burn::optim::SgdConfig;
    use burn::tensor::Device;
    use burn_store::PathFilter;

    fn qat_model(device: &Device) -> MobileNetV2 {
        let config = MobileNetV2Config::new()
            .with_width_mult(0.25)
            .with_num_classes(4);
        let mut model = config.init(device).unwrap();
        replace_relu(&mut model).unwrap();
        model.fuse_model(Some(true)).unwrap();
        prepare_qat(&mut model, QConfig::default_qat(QuantBackend::X86), device).unwrap();
        model
    }

    /// Observers on, fake-quant on, batch norm training: per fake-quant and batch norm.
    fn switches(model: &mut MobileNetV2) -> Vec<bool> {
        let mut all = vec![];
        for_each_fake_quant(model, |fq| {
            all.extend([fq.observer_enabled(), fq.fake_quant_enabled()])
        });
        for_each_batch_norm(model, |bn| all.push(bn.training()));
        all
    }

    /// A checkpoint of an older version (no switch entries) still resumes: its tensors load and
    /// the fresh model's switches stay (the epoch schedule sets them, as it did then); one that
    /// lacks any other entry is refused.
    #[test]
    fn a_checkpoint_without_switches_resumes_and_a_partial_one_is_refused() {
        let device = Device::flex().autodiff();
        let dir = tempfile::tempdir().unwrap();
        let mut trained = qat_model(&device);
        disable_observer(&mut trained);
        freeze_bn_stats(&mut trained);
        let write = |filter: fn(&str, &str) -> bool| {
            let path = checkpoint_paths(dir.path(), 0).0;
            let mut store = BurnpackStore::from_file(&path)
                .with_filter(PathFilter::new().with_predicate(filter))
                .overwrite(true);
            trained.save_into(&mut store).unwrap();
        };
        write(|path, _| !is_switch_entry(path));
        let mut model = qat_model(&device);
        let fresh = switches(&mut model);
        load_checkpoint(&mut model, SgdConfig::new().init(), dir.path(), 0).unwrap();
        assert_eq!(switches(&mut model), fresh);
        assert!(fresh.iter().all(|&on| on));
        let weight = |m: &MobileNetV2| m.stem.conv.weight.val().into_data();
        assert_eq!(weight(&model), weight(&trained));

        // Today's checkpoint: the switches come back.
        write(|_, _| true);
        let mut model = qat_model(&device);
        load_checkpoint(&mut model, SgdConfig::new().init(), dir.path(), 0).unwrap();
        assert_eq!(switches(&mut model), switches(&mut trained.clone()));

        write(|path, _| !path.ends_with("stem.bn.running_var"));
        let mut model = qat_model(&device);
        let Err(err) = load_checkpoint(&mut model, SgdConfig::new().init(), dir.path(), 0) else {
            panic!("a checkpoint without a running variance was loaded");
        };
        let err = err.to_string();
        assert!(err.contains("(1 missing, 0 unused, 0 mis-shaped"), "{err}");
    }

    #[test]
    fn a_locked_output_directory_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_out(dir.path()).unwrap();
        let pid = std::process::id();
        let held = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(held.trim(), pid.to_string());
        // A second lock (another open file: refused as another process would be).
        let err = lock_out(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!(
                "another run (pid {pid}) is using this output directory"
            )),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        // Released with the guard.
        drop(lock);
        let _again = lock_out(dir.path()).unwrap();
    }
}
