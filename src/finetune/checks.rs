//! What a fine-tuning run checks before it starts: every value of the recipe (named by the
//! flag of `examples/qat_finetune.rs` that sets it), the memory the data and a training batch
//! need, and the data's warnings. A bad value is refused at once, not after an epoch of
//! training.

use super::{FinetuneConfig, FinetuneData, class_count, model_config};
use burn::tensor::Device;

use crate::data::ImageDataset;
use crate::limits::{check_fits, product};
use crate::ops::has_cpu_kernels;
use crate::{Error, Result};

impl FinetuneConfig {
    /// Refuses a recipe that cannot run or would train to nothing ([`Self::validate_recipe`]),
    /// or a width multiplier MobileNetV2 refuses.
    pub fn validate(&self) -> Result<()> {
        self.validate_recipe()?;
        model_config(self, 1)
            .validate()
            .map_err(|e| e.for_flags(format_args!("--width-mult {}", self.width_mult)))
    }

    /// Refuses a recipe that cannot run or would train to nothing, whatever the model: no
    /// epoch, a non-positive or non-finite learning rate, an empty batch, observers off before
    /// they saw a batch (the ranges `convert` needs would never be recorded), `max_batches` of
    /// 0, no calibration batch.
    pub fn validate_recipe(&self) -> Result<()> {
        let refuse = |flag: String, why: &str| Err(Error::Config(format!("{flag}: {why}")));
        if self.epochs == 0 {
            return refuse(
                "--epochs 0".into(),
                "QAT needs at least one epoch (its observers record the activation ranges \
                 while training)",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return refuse(
                format!("--lr {}", self.lr),
                "the learning rate must be a positive finite number",
            );
        }
        if self.batch_size == 0 {
            return refuse("--batch-size 0".into(), "a batch needs at least one image");
        }
        if self.observer_off_epoch == 0 {
            return refuse(
                "--observer-off-epoch 0".into(),
                "observers switched off before the first epoch never record a range, and \
                 convert needs one; use 1 or later",
            );
        }
        if self.max_batches == Some(0) {
            return refuse(
                "--max-batches 0".into(),
                "at least one batch per epoch and evaluation is needed",
            );
        }
        if !(2..=8).contains(&self.weight_bits) {
            return refuse(
                format!("--weight-bits {}", self.weight_bits),
                "weights take 2 to 8 bits (held in int8)",
            );
        }
        if self.calibration_batches == 0 {
            return refuse(
                "calibration_batches 0".into(),
                "the PTQ baseline needs at least one calibration batch",
            );
        }
        Ok(())
    }

    /// Checks that the model for `data` fits in memory and, training on the CPU, one training
    /// batch too (activations are kept for the backward pass), before anything is built. On a
    /// GPU only sizes that overflow are refused: its memory is not the host's.
    pub fn check_memory(&self, data: &FinetuneData, device: &Device) -> Result<()> {
        let config = model_config(self, class_count(&data.train));
        let [h, w] = data.input_size();
        let batch = if has_cpu_kernels(device) {
            self.batch_size
        } else {
            1
        };
        config
            .check_model_size()
            .and_then(|()| config.check_forward_size(batch, h, w, true))
            .map_err(|e| {
                e.for_flags(format_args!(
                    "--width-mult {} --batch-size {} ({h}×{w} inputs)",
                    self.width_mult, self.batch_size
                ))
            })
    }
}

impl FinetuneData {
    /// Height and width of the model's input: the transform's resize, else the first training
    /// image's size (fitted data is already at the input size).
    pub fn input_size(&self) -> [usize; 2] {
        self.transform.resize.unwrap_or_else(|| {
            self.train
                .images
                .first()
                .map_or([0, 0], |i| [i.height, i.width])
        })
    }

    /// Things about the data a user should know before training on it: a single class (every
    /// prediction is right, and the accuracy says nothing), classes missing from a split.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let classes = class_count(&self.train);
        if classes < 2 {
            warnings.push(
                "the training data has only one class: every prediction is that class, so the \
                 accuracies say nothing about the model"
                    .into(),
            );
        }
        for (split, data) in [("training", &self.train), ("test", &self.test)] {
            let seen = distinct_labels(data);
            if classes >= 2 && seen < classes {
                warnings.push(format!(
                    "the {split} split has images of {seen} of the {classes} classes"
                ));
            }
        }
        warnings
    }
}

fn distinct_labels(data: &ImageDataset) -> usize {
    let mut labels = data.labels.clone();
    labels.sort_unstable();
    labels.dedup();
    labels.len()
}

/// Checks a user's input side for [`FinetuneData::fitted`]: MobileNetV2 needs 32 pixels or
/// more, and `images` RGB canvases of that size must fit in memory.
pub(super) fn check_fitted_size(size: usize, images: usize) -> Result<()> {
    if size < 32 {
        return Err(Error::Config(format!(
            "--input-size {size}: MobileNetV2 needs inputs of at least 32×32"
        )));
    }
    let bytes = product([images as u64, size as u64, size as u64, 3]);
    check_fits(bytes).map_err(|why| {
        Error::Config(format!(
            "--input-size {size}: {images} images of {size}×{size} RGB are too large: {why}"
        ))
    })
}
