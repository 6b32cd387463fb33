//! Loading float PyTorch state dicts (`.pth`, zip or legacy serialization) into Burn modules
//! through `burn-store`'s PyTorch reader, with key renaming and a strict, readable report of
//! missing, unexpected and mis-shaped keys (PyTorch's `load_state_dict(strict=True)`).
//!
//! Every tensor is converted to its parameter's dtype on the way in (float32 for the crate's
//! models), as PyTorch's `param.copy_(value)` does: a float16, bfloat16 or float64 checkpoint,
//! or one that mixes dtypes, loads into a float32 model.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor, TensorData};
use burn_store::burn_pack::{Error as PackError, Tensor as PackTensor};
use burn_store::{
    ApplyError, KeyRemapper, ModuleAdapter, ModuleContext, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, PytorchStore, PytorchStoreError, bridge,
};

use crate::{Error, Result};

/// How PyTorch state-dict keys map onto a Burn module's parameter paths: a list of
/// `(pytorch_prefix, burn_prefix)` pairs. A key is renamed by the first pair whose PyTorch
/// prefix it starts with; keys that match no pair keep their name.
#[derive(Debug, Clone, Default)]
pub struct KeyMap {
    prefixes: Vec<(String, String)>,
    ignored_suffixes: Vec<String>,
    optional_suffixes: Vec<String>,
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

    /// Model entries ending with `suffix` may be absent from the checkpoint and keep their
    /// value (e.g. a QAT batch norm's saved `freeze_bn` switch, which PyTorch keeps as a plain
    /// attribute outside its state dict).
    pub fn optional_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.optional_suffixes.push(suffix.into());
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
/// Each tensor is converted to its parameter's dtype as it is loaded (PyTorch's
/// `param.copy_(value)`): float16, bfloat16 and float64 checkpoints, mixed ones, and integer
/// or bool tensors in float slots load into the float32 model as the values they hold.
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
    let store_error = |e: PytorchStoreError| match e {
        PytorchStoreError::Io(source) => Error::io(path, source),
        other => Error::Checkpoint {
            path: path.to_path_buf(),
            reason: first_line(&other.to_string()),
        },
    };
    // What `PytorchStore::apply_to` does, with one more adapter in front of PyTorch's layout
    // conversion: burn-store loads a tensor in the dtype the file stores it in, and a float16
    // parameter in a float32 model makes Burn's ops panic at the first forward.
    let tensors: Vec<PackTensor> = store
        .get_all_tensors()
        .map_err(store_error)?
        .values()
        .cloned()
        .collect();
    let adapter = ScalarsAsVectors
        .chain(ToParamDType::of(&module))
        .chain(PyTorchToBurnAdapter);
    let result = module.apply(tensors, None, Some(Box::new(adapter)), SKIP_ENUM_VARIANTS);

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
            ApplyError::DTypeMismatch {
                path,
                expected,
                found,
            } => format!(
                "'{}' is a {found:?} tensor in the checkpoint but the model expects {expected:?}",
                keys.to_pytorch(path)
            ),
            ApplyError::LoadError { path, message } => format!(
                "'{}' could not be read: {}",
                keys.to_pytorch(path),
                first_line(message)
            ),
            other => first_line(&other.to_string()),
        })
        .collect();
    problems.extend(
        result
            .missing
            .iter()
            .filter(|(p, _)| {
                !keys
                    .optional_suffixes
                    .iter()
                    .any(|s| p.ends_with(s.as_str()))
            })
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

/// PyTorch module paths never name enum variants (`PytorchStore`'s own setting).
const SKIP_ENUM_VARIANTS: bool = true;

/// PyTorch's 0-d tensors (a per-tensor observer's `min_val` / `max_val`) as the one-element
/// vectors Burn holds them in: Burn has no rank-0 tensors, so a 0-d entry can only go into a
/// `[1]` slot (anything else is still a shape mismatch).
#[derive(Clone)]
struct ScalarsAsVectors;

impl ModuleAdapter for ScalarsAsVectors {
    fn adapt(&self, tensor: PackTensor, _ctx: ModuleContext<'_>) -> PackTensor {
        if tensor.shape.num_dims() != 0 {
            return tensor;
        }
        let (name, dtype, param_id) = (tensor.name.clone(), tensor.dtype, tensor.param_id);
        bridge::deferred(name, dtype, [1].into(), param_id, move || {
            let data = bridge::to_data(&tensor)?;
            Ok(TensorData::from_bytes(data.into_bytes(), [1], dtype))
        })
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// An adapter converting each tensor to the dtype of the float parameter it is loaded into
/// (PyTorch's `param.copy_(value)`): float16, bfloat16 and float64 tensors, and integer and
/// bool ones as PyTorch converts those too. The conversion is composed onto the tensor's
/// deferred read, so each tensor is still read once, when it is applied, and a failure is an
/// error of that tensor rather than a panic.
#[derive(Clone)]
struct ToParamDType {
    /// The dtype of each float parameter of the model, by module path.
    targets: Arc<HashMap<String, DType>>,
}

impl ToParamDType {
    fn of<M: Module>(module: &M) -> Self {
        let mut visitor = FloatParams::default();
        module.visit(&mut visitor);
        ToParamDType {
            targets: Arc::new(visitor.targets),
        }
    }
}

impl ModuleAdapter for ToParamDType {
    fn adapt(&self, tensor: PackTensor, _ctx: ModuleContext<'_>) -> PackTensor {
        let Some(&target) = self.targets.get(&tensor.name) else {
            return tensor;
        };
        let source = tensor.dtype;
        let convertible =
            source.is_float() || source.is_int() || source.is_uint() || source.is_bool();
        if source == target || !convertible {
            return tensor;
        }
        let (name, shape, param_id) = (tensor.name.clone(), tensor.shape.clone(), tensor.param_id);
        bridge::deferred(name, target, shape, param_id, move || {
            bridge::to_data(&tensor)?.try_cast(target).map_err(|e| {
                PackError::ValidationError(format!("cannot convert {source:?} to {target:?}: {e}"))
            })
        })
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// Collects the module path and dtype of every float parameter, with the paths burn-store's
/// applier gives them. A parameter not yet initialized is not materialized to ask: it will
/// have the device's float dtype, as the applier itself assumes.
#[derive(Default)]
struct FloatParams {
    path: Vec<String>,
    targets: HashMap<String, DType>,
}

impl ModuleVisitor for FloatParams {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if !(SKIP_ENUM_VARIANTS && container_type.starts_with("Enum:")) {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if !(SKIP_ENUM_VARIANTS && container_type.starts_with("Enum:")) {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dtype = if param.is_initialized() {
            param.val().dtype()
        } else {
            param.lazy_device().settings().float_dtype.into()
        };
        self.targets.insert(self.path.join("."), dtype);
    }
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
