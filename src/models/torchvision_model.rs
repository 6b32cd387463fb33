//! [`TorchvisionModel`]: what every torchvision family of this crate provides, so that the
//! checkpoint tools ([`crate::infer`], [`crate::bench`], the `burn-qat` command line and the
//! torchvision-shaped builders) are written once for all of them. A family implements it in its
//! `models/torchvision/<family>.rs`, beside its key maps.

use std::path::Path;

use burn::tensor::Device;

use super::arch::{Arch, ArchOptions, Family, identify_keys};
use crate::int8::Engine;
use crate::nn::ImageClassifier;
use crate::quant::QuantBackend;
use crate::{Error, Result};

/// A torchvision model family: its configuration, building, torchvision's float and int8
/// checkpoints, the size checks made before anything is allocated, and ONNX export.
pub trait TorchvisionModel: ImageClassifier + Clone + Sized {
    /// The configuration (torchvision's constructor arguments).
    type Config: TorchvisionConfig<Model = Self>;

    /// The family, for messages and for telling checkpoints apart.
    const FAMILY: Family;

    /// The quantization backend torchvision's builder defaults to (its `backend` argument:
    /// `qnnpack` for the MobileNets, `fbgemm` for ResNet and ShuffleNetV2).
    const DEFAULT_BACKEND: QuantBackend;

    /// The configuration torchvision's builder `arch` uses, with `options` (`num_classes`, and
    /// the width multiplier where the family has one). Errors for an `arch` of another family.
    fn arch_config(arch: Arch, options: &ArchOptions) -> Result<Self::Config>;

    /// The builder a configuration is, if it is one of them unchanged but for the class count
    /// (for messages; `None` for other configurations, such as small test models).
    fn config_arch(config: &Self::Config) -> Option<Arch>;

    /// Checks the configuration and that the model's weights fit in memory, before anything
    /// is allocated.
    fn check_config(config: &Self::Config) -> Result<()>;

    /// Checks that an inference pass on `[batch, 3, height, width]` fits in memory with the
    /// model's weights (the widest layer's activations), naming the sizes.
    fn check_forward_size(
        config: &Self::Config,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<()>;

    /// Classes of the classifier `config` builds.
    fn config_num_classes(config: &Self::Config) -> usize;

    /// The width multiplier of `config`, for families that have one (reports).
    fn config_width_mult(config: &Self::Config) -> Option<f64> {
        let _ = config;
        None
    }

    /// Builds the float model with torchvision's initialisation.
    fn build(config: &Self::Config, device: &Device) -> Result<Self>;

    /// Builds the model and loads torchvision's float state dict at `path`.
    fn load_torchvision(path: &Path, config: &Self::Config, device: &Device) -> Result<Self>;

    /// Builds the model and loads torchvision's int8 state dict at `path` (a converted model's
    /// `state_dict()`, official checkpoints included) into its int8 layers, to run with
    /// `engine`'s arithmetic.
    fn load_torchvision_int8(
        path: &Path,
        config: &Self::Config,
        engine: Engine,
        device: &Device,
    ) -> Result<Self>;

    /// Checks that `shape` is a batch the family takes, before any model exists (the
    /// associated form of [`ImageClassifier::check_input_shape`]).
    fn check_batch_shape(shape: &[usize]) -> Result<()>;

    /// Classes the classifier predicts.
    fn num_classes(&self) -> usize;

    /// torchvision's `fuse_model(is_qat)` (`None`: follow the model's mode).
    fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()>;
}

/// The configuration of a [`TorchvisionModel`], which names its model type, so that generic
/// functions taking `&C` infer the model from the configuration passed.
pub trait TorchvisionConfig: Clone + std::fmt::Debug {
    /// The model this configuration builds.
    type Model: TorchvisionModel<Config = Self>;
}

/// Tells a checkpoint of another architecture apart from a damaged one: when loading `path`
/// into `M` failed with a key mismatch and the file's keys are those of another family or
/// builder, the error says which, and which `--arch` was asked for. Any other error comes back
/// unchanged.
pub(crate) fn explain_mismatch<M: TorchvisionModel>(
    error: Error,
    path: &Path,
    config: &M::Config,
) -> Error {
    let Error::CheckpointMismatch { path: file, reason } = error else {
        return error;
    };
    let keys: Option<Vec<String>> = if crate::io::looks_like_safetensors(path) {
        crate::io::read_int8_file(path)
            .ok()
            .map(|(state, _)| state.into_keys().collect())
    } else {
        crate::io::read_state_dict_keys(path).ok()
    };
    let found = keys.and_then(|k| identify_keys(k.iter().map(String::as_str)));
    let expected = M::config_arch(config);
    let wanted = match expected {
        Some(arch) => format!("--arch {arch}"),
        None => format!("this {} configuration", M::FAMILY.name()),
    };
    let other = match &found {
        Some(f) if f.family != M::FAMILY => true,
        Some(f) => expected.is_some_and(|a| !f.archs.contains(&a)),
        None => false,
    };
    let Some(found) = found.filter(|_| other) else {
        return Error::CheckpointMismatch { path: file, reason };
    };
    let what = match found.archs.as_slice() {
        [] => format!(
            "a {} checkpoint of no torchvision builder",
            found.family.name()
        ),
        archs => {
            let names: Vec<&str> = archs.iter().map(|a| a.name()).collect();
            format!(
                "a {} checkpoint (--arch {})",
                found.family.name(),
                names.join(" or ")
            )
        }
    };
    Error::CheckpointMismatch {
        path: file,
        reason: format!("it is {what}, which does not match {wanted} ({reason})"),
    }
}
