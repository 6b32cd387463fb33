//! Loading float PyTorch state dicts (`.pth`, zip or legacy serialization) into Burn modules
//! through `burn-store`'s PyTorch reader, with key renaming and a strict, readable report of
//! missing, unexpected and mis-shaped keys (PyTorch's `load_state_dict(strict=True)`).

use std::path::Path;

use burn::module::Module;
use burn_store::{ApplyError, KeyRemapper, ModuleSnapshot, PytorchStore, PytorchStoreError};

use crate::{Error, Result};

/// How PyTorch state-dict keys map onto a Burn module's parameter paths: a list of
/// `(pytorch_prefix, burn_prefix)` pairs. A key is renamed by the first pair whose PyTorch
/// prefix it starts with; keys that match no pair keep their name.
#[derive(Debug, Clone, Default)]
pub struct KeyMap {
    prefixes: Vec<(String, String)>,
    ignored_suffixes: Vec<String>,
}

impl KeyMap {
    /// An empty map (keys are taken as they are).
    pub fn new() -> Self {
        Self::default()
    }

    /// Renames keys starting with `pytorch_prefix` to start with `burn_prefix`.
    pub fn prefix(
        mut self,
        pytorch_prefix: impl Into<String>,
        burn_prefix: impl Into<String>,
    ) -> Self {
        self.prefixes
            .push((pytorch_prefix.into(), burn_prefix.into()));
        self
    }

    /// Keys ending with `suffix` are allowed in the checkpoint without a place in the model
    /// (e.g. BatchNorm's `num_batches_tracked`, which Burn does not keep).
    pub fn ignore_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.ignored_suffixes.push(suffix.into());
        self
    }

    /// The Burn path of a PyTorch key.
    pub fn to_burn(&self, key: &str) -> String {
        rename(
            key,
            self.prefixes.iter().map(|(p, b)| (p.as_str(), b.as_str())),
        )
    }

    /// The PyTorch key of a Burn path (for error messages). Burn's norm layers call their
    /// affine parameters `gamma`/`beta` where PyTorch says `weight`/`bias`.
    pub fn to_pytorch(&self, path: &str) -> String {
        let key = rename(
            path,
            self.prefixes.iter().map(|(p, b)| (b.as_str(), p.as_str())),
        );
        for (burn, torch) in [(".gamma", ".weight"), (".beta", ".bias")] {
            if let Some(stem) = key.strip_suffix(burn) {
                return format!("{stem}{torch}");
            }
        }
        key
    }

    fn is_ignored(&self, burn_path: &str) -> bool {
        self.ignored_suffixes
            .iter()
            .any(|s| burn_path.ends_with(s.as_str()))
    }

    fn remapper(&self) -> Result<KeyRemapper> {
        let patterns = self
            .prefixes
            .iter()
            .map(|(p, b)| (format!("^{}", regex_escape(p)), b.replace('$', "$$")))
            .collect::<Vec<_>>();
        KeyRemapper::from_patterns(patterns).map_err(|e| Error::Config(format!("bad key map: {e}")))
    }
}

fn rename<'a>(key: &str, mut pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .find_map(|(from, to)| key.strip_prefix(from).map(|rest| format!("{to}{rest}")))
        .unwrap_or_else(|| key.to_string())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape = "\\.+*?()|[]{}^$".contains(c);
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// Loads the float state dict at `path` into `module`, renaming keys with `keys`.
///
/// Strict like PyTorch's `load_state_dict`: every model parameter must be in the file with the
/// right shape and every file entry must have a place in the model (except ignored suffixes).
/// On error the module is dropped and the error names the first offending PyTorch keys.
///
/// The file is checked by the crate's own bounded reader first (see
/// [`read_quantized_state_dict`](super::read_quantized_state_dict)): a directory, an empty,
/// truncated or corrupt file, huge declared sizes, deep pickle nesting, calls other than
/// PyTorch's tensor rebuilds, or quantized tensors are [`Error::Checkpoint`]s naming the file
/// before burn-store's reader sees it.
pub fn load_state_dict<M: Module>(mut module: M, path: &Path, keys: &KeyMap) -> Result<M> {
    // The crate's own bounded reader checks the file first (clear I/O errors, limits on
    // declared sizes and pickle nesting, no calls but PyTorch's tensor rebuilds), so burn-store
    // only ever sees well-formed checkpoints.
    super::quantized_pth::check_float_state_dict(path)?;
    let mut store = PytorchStore::from_file(path)
        .remap(keys.remapper()?)
        .validate(false)
        .allow_partial(true);
    let result = module.load_from(&mut store).map_err(|e| match e {
        PytorchStoreError::Io(source) => Error::io(path, source),
        other => Error::Checkpoint {
            path: path.to_path_buf(),
            reason: first_line(&other.to_string()),
        },
    })?;

    let mut problems: Vec<String> = result
        .errors
        .iter()
        .map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "'{}' has shape {:?} in the checkpoint but the model expects {:?}",
                keys.to_pytorch(path),
                found.as_slice(),
                expected.as_slice()
            ),
            other => first_line(&other.to_string()),
        })
        .collect();
    problems.extend(
        result
            .missing
            .iter()
            .map(|(p, _)| format!("missing key '{}'", keys.to_pytorch(p))),
    );
    problems.extend(
        result
            .unused
            .iter()
            .filter(|p| !keys.is_ignored(p))
            .map(|p| format!("unexpected key '{}'", keys.to_pytorch(p))),
    );
    if problems.is_empty() {
        return Ok(module);
    }
    let total = problems.len();
    let mut reason = problems.into_iter().take(3).collect::<Vec<_>>().join("; ");
    if total > 3 {
        reason.push_str(&format!(" (and {} more)", total - 3));
    }
    Err(Error::CheckpointMismatch {
        path: path.to_path_buf(),
        reason,
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_renames_both_ways() {
        let map = KeyMap::new()
            .prefix("features.0.0.", "stem.conv.")
            .prefix("features.1.conv.0.0.", "blocks.0.depthwise.conv.");
        assert_eq!(map.to_burn("features.0.0.weight"), "stem.conv.weight");
        assert_eq!(map.to_pytorch("stem.conv.weight"), "features.0.0.weight");
        assert_eq!(map.to_pytorch("stem.bn.gamma"), "stem.bn.weight");
        assert_eq!(
            map.to_burn("features.1.conv.0.0.weight"),
            "blocks.0.depthwise.conv.weight"
        );
        assert_eq!(map.to_burn("other.weight"), "other.weight");
        assert_eq!(regex_escape("a.b"), "a\\.b");
    }
}
