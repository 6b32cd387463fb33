//! The models of a fine-tuning run: the float model it starts from ([`FloatModel`], any
//! [`ImageClassifier`]; MobileNetV2 of the recipe's width for [`run`](super::run)), the qconfig
//! the recipe asks for ([`FinetuneConfig::qconfig`], the one place it is built), its QAT
//! preparation and the PTQ baseline.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use burn_store::{BurnpackStore, ModuleSnapshot};

use super::evaluate::batch_tensors;
use super::{FinetuneConfig, FinetuneData, class_count};
use crate::convert::convert;
use crate::data::{Image, shuffled_indices};
use crate::fuse::{fuse_modules, fuse_modules_qat};
use crate::int8::Engine;
use crate::models::{MobileNetV2, MobileNetV2Config};
use crate::nn::{ImageClassifier, PrepareMode};
use crate::quant::QConfig;
use crate::quantize::{enable_static_estimate, prepare, prepare_qat, replace_relu};
use crate::{Error, Result};

/// The float model a fine-tuning run ([`run_with`](super::run_with)) starts from.
pub struct FloatModel<'a, M> {
    /// Stem of the int8 model files the run writes: `{name}_ptq.int8.safetensors` and
    /// `{name}_qat.int8.safetensors`.
    pub name: &'a str,
    /// Builds a new float model, with its float weights, on a device. The run calls it once
    /// per model it needs (float baseline, PTQ, QAT): module clones share their running
    /// statistics, so each gets its own.
    pub build: &'a dyn Fn(&Device) -> Result<M>,
}

impl FinetuneConfig {
    /// The qconfig every layer of the run gets: for [`PrepareMode::Qat`] the backend's default
    /// QAT qconfig (`get_default_qat_qconfig`), or LSQ's ([`QConfig::lsq_qat`]) with `lsq`; for
    /// [`PrepareMode::Ptq`] its default PTQ qconfig (`get_default_qconfig`, histogram
    /// observers). Weights get `weight_bits` bits. Errors: `weight_bits` outside 2..=8.
    pub fn qconfig(&self, mode: PrepareMode) -> Result<QConfig> {
        match mode {
            PrepareMode::Qat if self.lsq => QConfig::lsq_qat(self.backend, self.weight_bits),
            PrepareMode::Qat => {
                QConfig::default_qat(self.backend).with_weight_bits(self.weight_bits)
            }
            PrepareMode::Ptq => {
                QConfig::default_ptq(self.backend).with_weight_bits(self.weight_bits)
            }
        }
    }

    /// `", 4-bit weights"` in the table's labels when the weights have fewer than 8 bits.
    pub(super) fn bits_label(&self) -> String {
        if self.weight_bits < 8 {
            format!(" ({}-bit weights)", self.weight_bits)
        } else {
            String::new()
        }
    }

    /// The bits after the engine's name in an int8 row's label (`x86, 4-bit weights`).
    pub(super) fn weight_label(&self) -> String {
        if self.weight_bits < 8 {
            format!(", {}-bit weights", self.weight_bits)
        } else {
            String::new()
        }
    }

    /// `" LSQ"` in the QAT rows' labels of an LSQ run.
    pub(super) fn lsq_label(&self) -> &'static str {
        if self.lsq { " LSQ" } else { "" }
    }
}

/// Prepares a float model for QAT as the run does: ReLU6 → ReLU, fused for QAT
/// (`fuse_modules_qat`), [`FinetuneConfig::qconfig`]'s fake-quants attached (`prepare_qat`).
pub fn prepare_model_qat<M: ImageClassifier>(
    model: &mut M,
    config: &FinetuneConfig,
    device: &Device,
) -> Result<()> {
    replace_relu(model)?;
    fuse_modules_qat(model)?;
    prepare_qat(model, config.qconfig(PrepareMode::Qat)?, device)?;
    if config.lsq {
        // PyTorch's LSQ starts with gradients reaching scale and zero-point while the observers
        // estimate them; the recipe estimates without learning until `lsq_learn_epoch`.
        enable_static_estimate(model);
    }
    Ok(())
}

/// Post-training quantization of a float model on the CPU (`torch.ao.quantization` eager
/// PTQ): ReLU6 → ReLU, `fuse_modules` (eval mode), `prepare` with
/// [`FinetuneConfig::qconfig`] for PTQ, `calibration_batches` shuffled training batches
/// through the model, `convert`. `model` is on the CPU (`Device::flex()`).
pub fn calibrate_and_convert<M: ImageClassifier>(
    config: &FinetuneConfig,
    data: &FinetuneData,
    model: M,
) -> Result<M> {
    let cpu = Device::flex();
    let mut ptq = model.valid();
    replace_relu(&mut ptq)?;
    fuse_modules(&mut ptq)?;
    prepare(&mut ptq, config.qconfig(PrepareMode::Ptq)?, &cpu)?;
    let calib = shuffled_indices(data.train.len(), config.seed);
    for chunk in calib
        .chunks(config.batch_size.max(1))
        .take(config.calibration_batches.max(1))
    {
        let images: Vec<&Image> = chunk.iter().map(|&i| &data.train.images[i]).collect();
        let labels: Vec<usize> = chunk.iter().map(|&i| data.train.labels[i]).collect();
        let (x, _) = batch_tensors(&images, &labels, &data.transform, &cpu)?;
        let _ = ptq.forward(x);
    }
    convert(&mut ptq, Engine::from_backend(config.backend)?)?;
    Ok(ptq)
}

/// The MobileNetV2 of `config`'s width with `classes` outputs.
pub(super) fn model_config(config: &FinetuneConfig, classes: usize) -> MobileNetV2Config {
    MobileNetV2Config::new()
        .with_num_classes(classes)
        .with_width_mult(config.width_mult)
}

/// A fresh float MobileNetV2 with the float weights (a new model each time: module clones
/// share their running statistics).
pub(super) fn float_model(
    config: &FinetuneConfig,
    classes: usize,
    weights: Option<&Path>,
    device: &Device,
) -> Result<MobileNetV2> {
    let model = model_config(config, classes).init(device)?;
    match weights {
        Some(path) => load_float_weights(
            model,
            path,
            &format!(
                "MobileNetV2 of width {} with {classes} classes",
                config.width_mult
            ),
        ),
        None => Ok(model),
    }
}

/// Loads float weights saved with burn-store (burnpack, `.bpk`) into `model`: every tensor of
/// the file must fit one of the model's and every one of the model's must be in the file, so
/// that a file of another width, class count or architecture is refused (`fits` describes the
/// model in that error) instead of training from half-random weights.
pub fn load_float_weights<M: Module>(mut model: M, path: &Path, fits: &str) -> Result<M> {
    // Checked here rather than by the store, whose error lists every mismatch on one line.
    let mut store = BurnpackStore::from_file(path)
        .validate(false)
        .allow_partial(true);
    let applied = model.load_from(&mut store).map_err(|e| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!("cannot load float weights: {e}"),
    })?;
    if !(applied.missing.is_empty() && applied.unused.is_empty() && applied.errors.is_empty()) {
        let first = applied
            .errors
            .first()
            .map(|e| format!("; first: {e}"))
            .or_else(|| {
                applied
                    .missing
                    .first()
                    .map(|m| format!("; first missing: {m:?}"))
            })
            .unwrap_or_default();
        return Err(Error::mismatch(format!(
            "the float weights do not fit the model ({fits}): {} missing, {} unused, {} \
             mis-shaped tensors{first}",
            applied.missing.len(),
            applied.unused.len(),
            applied.errors.len()
        ))
        .at_path(path));
    }
    Ok(model)
}

/// The QAT model of the main job: a MobileNetV2 of `config`'s width with `classes` outputs and
/// the float `weights` (burnpack), prepared by [`prepare_model_qat`].
pub fn qat_model(
    config: &FinetuneConfig,
    classes: usize,
    weights: Option<&Path>,
    device: &Device,
) -> Result<MobileNetV2> {
    let mut model = float_model(config, classes, weights, device)?;
    prepare_model_qat(&mut model, config, device)?;
    Ok(model)
}

/// [`calibrate_and_convert`] of the main job's float MobileNetV2 (`float_weights`, burnpack).
/// The int8 model runs on the CPU.
pub fn post_training_quantize(
    config: &FinetuneConfig,
    data: &FinetuneData,
    float_weights: Option<&Path>,
) -> Result<MobileNetV2> {
    let cpu = Device::flex();
    let classes = class_count(&data.train);
    calibrate_and_convert(
        config,
        data,
        float_model(config, classes, float_weights, &cpu)?,
    )
}
