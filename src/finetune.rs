//! The main job: quantization-aware fine-tuning of a float model and the comparison a user
//! wants at the end — float, PTQ int8, QAT fake-quant and QAT int8: accuracy, size and latency.
//! [`run`] trains MobileNetV2 (`examples/qat_finetune.rs` parses flags and calls it; a test runs
//! it on a few batches); [`run_with`] any quantizable image classifier
//! ([`ImageClassifier`]), with the same checkpoints and `resume`.
//!
//! The loop is hand-written rather than burn-train's `Learner`: the QAT schedule changes the
//! model between epochs (observers off after epoch N, batch-norm statistics frozen after epoch
//! M — torchvision's `train_quantization.py` recipe), which `Learner` has no hook for, and the
//! result must be converted and evaluated on the int8 path. It keeps what `Learner` would give:
//! a progress bar (the `progress` feature), per-epoch metrics, atomic per-epoch checkpoints
//! (model and optimizer state) and `resume`, and it stops on a non-finite loss or model rather
//! than save one.
//!
//! Training on several devices at once goes through `Learner` instead: see [`data_parallel`].

mod checkpoint;
mod checks;
pub mod data_parallel;
mod evaluate;
mod model;
mod progress;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::Device;

use crate::convert::convert;
use crate::data::{
    Image, ImageDataset, Normalize, RandomAffine, SplitMix64, Transform, shuffled_indices,
};
use crate::int8::Engine;
use crate::io::atomic::{remove_stale_temps, write_atomic_bytes};
use crate::io::save_int8_model;
use crate::nn::{ImageClassifier, Quantizable};
use crate::quant::QuantBackend;
use crate::quantize::{disable_observer, enable_param_learning, freeze_bn_stats};
use crate::{Error, Result};
use checkpoint::{
    last_checkpoint, last_good, load_checkpoint, lock_out, model_bytes, save_checkpoint,
};
pub use evaluate::accuracy;
use evaluate::{batch_tensors, latency_ms, on_cpu};
pub use model::{
    FloatModel, calibrate_and_convert, load_float_weights, post_training_quantize,
    prepare_model_qat, qat_model,
};
use model::{float_model, model_config};
use progress::EpochBar;

/// The recipe of a QAT fine-tuning run.
#[derive(Config, Debug)]
pub struct FinetuneConfig {
    /// MobileNetV2 width multiplier (must match the float weights; [`run`] only).
    #[config(default = 0.5)]
    pub width_mult: f64,
    /// QAT epochs.
    #[config(default = 3)]
    pub epochs: usize,
    /// Peak learning rate (cosine decay over the run).
    #[config(default = 0.001)]
    pub lr: f64,
    /// Batch size.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Which int8 engine to train for and convert to. x86 (PyTorch's default) quantizes
    /// weights per channel, which survives batch-norm folding of near-dead channels (a tiny
    /// running variance makes one channel's folded weights hundreds of times larger than the
    /// rest, and per-tensor qnnpack weights then round every other channel to zero).
    #[config(default = "QuantBackend::X86")]
    pub backend: QuantBackend,
    /// Observers stop updating ranges from this epoch on (torchvision: `num_observer_update_epochs`).
    #[config(default = 2)]
    pub observer_off_epoch: usize,
    /// Batch-norm statistics freeze from this epoch on (torchvision: `num_batch_norm_update_epochs`).
    #[config(default = 1)]
    pub bn_freeze_epoch: usize,
    /// Training batches the PTQ baseline calibrates on.
    #[config(default = 8)]
    pub calibration_batches: usize,
    /// At most this many batches per epoch (and per evaluation); `None`: all. For smoke tests.
    pub max_batches: Option<usize>,
    /// Images timed one at a time for the latency column.
    #[config(default = 20)]
    pub latency_images: usize,
    /// Seed of the shuffling and augmentation.
    #[config(default = 2026)]
    pub seed: u64,
    /// Weight bits, 2 to 8: below 8 the weights of PTQ and QAT are quantized to
    /// `[-2^(b-1), 2^(b-1) - 1]` (`[-8, 7]` for 4), held in int8 ([`QConfig::with_weight_bits`](crate::quant::QConfig::with_weight_bits)).
    #[config(default = 8)]
    pub weight_bits: u32,
    /// QAT with LSQ ([`QConfig::lsq_qat`](crate::quant::QConfig::lsq_qat): PyTorch's
    /// `_LearnableFakeQuantize` on weights and activations) instead of the default fake-quants.
    #[config(default = false)]
    pub lsq: bool,
    /// With `lsq`: scale and zero-point are the observers' static estimates before this epoch
    /// (`enable_static_estimate`) and learned from it on (`enable_param_learning`).
    #[config(default = 1)]
    pub lsq_learn_epoch: usize,
}

/// Images at the model's input size, with their labels, and how to normalise them.
pub struct FinetuneData {
    /// Training images (augmented per epoch when `augment` is set).
    pub train: ImageDataset,
    /// Test images.
    pub test: ImageDataset,
    /// How an image becomes the model's input (resize, normalisation), after `augment`.
    pub transform: Transform,
    /// Training augmentation, drawn per image per epoch from the run's seed.
    pub augment: Option<RandomAffine>,
}

/// The training split and augmentation of the shipped float model
/// (`examples/train_float_mnist.rs`): 28×28 digits centred on 32×32.
#[cfg(feature = "mnist")]
const MNIST_SPLIT_SEED: u64 = 2026;

impl FinetuneData {
    /// The embedded MNIST digits as the shipped float model saw them
    /// (`examples/train_float_mnist.rs`): the same seeded 4,000 / 1,000 split, digits resized
    /// to 32×32, training digits also rotated (±10°), scaled (±10%) and shifted (±3 px) in the
    /// same resampling ([`RandomAffine::MNIST_32`]). Needs the `mnist` feature.
    #[cfg(feature = "mnist")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mnist")))]
    pub fn embedded_mnist() -> Result<Self> {
        let all = crate::data::EmbeddedMnist::load()?;
        let (train, test) = crate::data::train_test_split(&all, 0.2, MNIST_SPLIT_SEED);
        Ok(FinetuneData {
            train,
            test,
            transform: Transform {
                resize: Some([32, 32]),
                center_crop: None,
                normalize: Normalize::MNIST,
            },
            augment: Some(RandomAffine::MNIST_32),
        })
    }

    /// A user's images (e.g. an ImageFolder or CIFAR-10), each scaled to fit a `size`×`size`
    /// canvas and centred, ImageNet normalisation, no augmentation.
    /// `size` must be at least 32 and the canvases must fit in memory.
    pub fn fitted(mut train: ImageDataset, mut test: ImageDataset, size: usize) -> Result<Self> {
        checks::check_fitted_size(size, train.len().saturating_add(test.len()))?;
        let canvas = RandomAffine::identity([size, size]);
        for image in train.images.iter_mut().chain(test.images.iter_mut()) {
            let scale = size as f32 / image.height.max(image.width).max(1) as f32;
            let params = crate::data::AffineParams {
                degrees: 0.0,
                scale,
                shift: [0.0, 0.0],
            };
            *image = canvas.warp(image, &params);
        }
        Ok(FinetuneData {
            train,
            test,
            transform: Transform {
                resize: None,
                center_crop: None,
                normalize: Normalize::IMAGENET,
            },
            augment: None,
        })
    }
}

/// One epoch of training images as [`run_with`] draws them: the epoch's seed (`seed + 1000 +
/// epoch`, also dropout's), its shuffled order, and the seeded augmentation, drawn once per
/// image in order. Public so that another framework can be fed the same stream
/// (`examples/export_main_job_data.rs`).
pub struct TrainingEpoch<'a> {
    data: &'a FinetuneData,
    /// The epoch's seed.
    pub seed: u64,
    /// Training-image indices in the epoch's order.
    pub order: Vec<usize>,
    rng: SplitMix64,
}

impl TrainingEpoch<'_> {
    /// The next images of the epoch, `indices` (the next ones of [`Self::order`]), augmented.
    pub fn augmented(&mut self, indices: &[usize]) -> Vec<Image> {
        let train = &self.data.train;
        indices
            .iter()
            .map(|&j| match &self.data.augment {
                Some(a) => a.apply(&train.images[j], &mut self.rng),
                None => train.images[j].clone(),
            })
            .collect()
    }
}

impl FinetuneData {
    /// Epoch `epoch`'s training stream of a run seeded `seed` ([`TrainingEpoch`]).
    pub fn epoch(&self, seed: u64, epoch: usize) -> TrainingEpoch<'_> {
        let seed = seed.wrapping_add(1000 + epoch as u64);
        TrainingEpoch {
            data: self,
            seed,
            order: shuffled_indices(self.train.len(), seed),
            rng: SplitMix64::new(seed ^ 0xA076_1D64_78BD_642F),
        }
    }
}

/// One line of the final table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was evaluated.
    pub name: String,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
    /// Size of the model's weights on disk, in bytes.
    pub size_bytes: u64,
    /// Median latency of one image, in milliseconds.
    pub latency_ms: f64,
}

/// Formats the table.
pub fn format_table(rows: &[Row]) -> String {
    let mut out =
        String::from("| model | test accuracy | size | latency / image |\n|---|---|---|---|\n");
    for r in rows {
        out += &format!(
            "| {} | {:.2}% | {:.2} MB | {:.2} ms |\n",
            r.name,
            r.accuracy * 100.0,
            r.size_bytes as f64 / 1e6,
            r.latency_ms
        );
    }
    out
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Applies the schedule for `epoch` (LSQ learning, observers off, BN frozen).
fn apply_schedule<M: Quantizable>(model: &mut M, config: &FinetuneConfig, epoch: usize) {
    if config.lsq && epoch >= config.lsq_learn_epoch {
        enable_param_learning(model);
    }
    if epoch >= config.observer_off_epoch {
        disable_observer(model);
    }
    if epoch >= config.bn_freeze_epoch {
        freeze_bn_stats(model);
    }
}

/// The number of classes of a dataset: its class names, or one more than its largest label.
pub fn class_count(data: &ImageDataset) -> usize {
    data.classes
        .len()
        .max(1 + data.labels.iter().max().copied().unwrap_or(0))
}

/// Runs the whole job on MobileNetV2 of `config`'s width (the float `float_weights`, burnpack,
/// or random weights) and returns the table's rows: float, PTQ int8, QAT fake-quant, QAT int8.
/// [`run_with`] with the recipe and memory checked for that model first; the int8 models go
/// to `out/mobilenet_v2_ptq.int8.safetensors` and `out/mobilenet_v2_qat.int8.safetensors`.
pub fn run(
    config: &FinetuneConfig,
    data: &FinetuneData,
    float_weights: Option<&Path>,
    out: &Path,
    resume: bool,
    device: &Device,
) -> Result<Vec<Row>> {
    config.validate()?;
    check_splits(data)?;
    config.check_memory(data, device)?;
    let classes = class_count(&data.train);
    let build = |device: &Device| float_model(config, classes, float_weights, device);
    let model = FloatModel {
        name: "mobilenet_v2",
        build: &build,
    };
    run_with(config, data, &model, out, resume, device)
}

fn check_splits(data: &FinetuneData) -> Result<()> {
    if data.train.is_empty() || data.test.is_empty() {
        return Err(Error::Data(
            "fine-tuning needs non-empty train and test splits".into(),
        ));
    }
    Ok(())
}

/// Runs the whole job on any quantizable image classifier and returns the table's rows: the
/// float model (`out/float.bpk`), PTQ int8 ([`calibrate_and_convert`],
/// `out/{name}_ptq.int8.safetensors`), QAT fake-quant and QAT int8
/// (`out/{name}_qat.int8.safetensors`). QAT starts from a new float model prepared by
/// [`prepare_model_qat`] and follows the recipe's schedule (observers off, batch norm frozen).
///
/// After every epoch a checkpoint is written atomically (temporary file, fsync, rename, fsync
/// of the directory): the optimizer state `out/qat_epoch{N}.optim.bpk`, then the model
/// `out/qat_epoch{N}.bpk`, whose presence marks the checkpoint complete. With `resume`, the run
/// continues after the last complete one (also after a `kill -9` in the middle of a write, whose
/// leftover temporary file it removes); as dropout's generator is reseeded per epoch, the result
/// is bit-identical to an uninterrupted run's on the same machine.
///
/// A non-finite loss, or a model whose weights or fake-quant scales became non-finite by the end
/// of an epoch, stops training with [`Error::Training`] naming the epoch (and batch) and the last
/// good checkpoint, which is left as it was.
///
/// `out` is locked for the length of the run (`out/.burn-qat.lock`, holding the pid): a second
/// run in the same directory fails at once with an error naming the directory and that pid.
pub fn run_with<M: ImageClassifier>(
    config: &FinetuneConfig,
    data: &FinetuneData,
    model: &FloatModel<'_, M>,
    out: &Path,
    resume: bool,
    device: &Device,
) -> Result<Vec<Row>> {
    config.validate_recipe()?;
    check_splits(data)?;
    for warning in data.warnings() {
        eprintln!("warning: {warning}");
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // Held to the end of the run: a second run in `out` is refused.
    let _lock = lock_out(out)?;
    let FloatModel { name, build } = *model;
    let cpu = Device::flex();
    // Dropout draws from the backend's generator (the flex one under autodiff): seeded, a run
    // is reproducible, also when several run in one process.
    device.seed(config.seed);
    cpu.seed(config.seed);
    let norm = &data.transform;
    let engine = Engine::from_backend(config.backend)?;
    let mut rows = Vec::new();
    let evaluate = |label: String, model: &M, int8: bool, file: &Path| -> Result<Row> {
        Ok(Row {
            name: label,
            accuracy: accuracy(model, &data.test, norm, int8, config.max_batches, &cpu)?,
            size_bytes: file_size(file),
            latency_ms: latency_ms(model, &data.test, norm, int8, config.latency_images, &cpu)?,
        })
    };

    // 1. Float.
    let float = build(&cpu)?.valid();
    let float_path = out.join("float.bpk");
    write_atomic_bytes(&float_path, &model_bytes(&float, &float_path)?)?;
    rows.push(evaluate("float".to_string(), &float, false, &float_path)?);
    println!("float: {:.2}%", rows[0].accuracy * 100.0);

    // 2. PTQ baseline: calibrate on training batches, convert.
    let ptq = calibrate_and_convert(config, data, build(&cpu)?)?;
    let ptq_path = out.join(format!("{name}_ptq.int8.safetensors"));
    save_int8_model(&ptq, &ptq_path, &BTreeMap::new())?;
    rows.push(evaluate(
        format!("PTQ int8 ({engine}{})", config.weight_label()),
        &ptq,
        true,
        &ptq_path,
    )?);
    println!("PTQ int8: {:.2}%", rows[1].accuracy * 100.0);

    // 3. QAT.
    let mut model = build(device)?;
    prepare_model_qat(&mut model, config, device)?;
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let mut first_epoch = 0;
    if resume {
        // Half-written files of a run killed mid-write (not those of a live process).
        remove_stale_temps(out)?;
        if let Some((epoch, path)) = last_checkpoint(out, config.epochs) {
            optim = load_checkpoint(&mut model, optim, out, epoch)?;
            first_epoch = epoch + 1;
            println!(
                "resuming after epoch {}/{} ({})",
                epoch + 1,
                config.epochs,
                path.display()
            );
        }
    }
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let steps = data
        .train
        .len()
        .div_ceil(config.batch_size)
        .min(config.max_batches.unwrap_or(usize::MAX));
    let total = (steps * config.epochs).max(1) as f64;
    for epoch in first_epoch..config.epochs {
        apply_schedule(&mut model, config, epoch);
        let start = Instant::now();
        let bar = EpochBar::new(steps, epoch + 1, config.epochs);
        let mut stream = data.epoch(config.seed, epoch);
        // Dropout's generator is reseeded per epoch, so that a run resumed after epoch N
        // draws what the uninterrupted run drew (bit-identical results).
        device.seed(stream.seed);
        cpu.seed(stream.seed);
        let order = stream.order.clone();
        let mut loss_sum = 0.0;
        for (i, chunk) in order.chunks(config.batch_size).take(steps).enumerate() {
            let images = stream.augmented(chunk);
            let refs: Vec<&Image> = images.iter().collect();
            let labels: Vec<usize> = chunk.iter().map(|&j| data.train.labels[j]).collect();
            let (x, y) = batch_tensors(&refs, &labels, norm, device)?;
            let loss = loss_fn.forward(model.forward(x), y);
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                bar.finish_and_clear();
                return Err(Error::Training(format!(
                    "the loss is {value} (non-finite) at epoch {}/{}, batch {}/{steps}; {}",
                    epoch + 1,
                    config.epochs,
                    i + 1,
                    last_good(out, config.epochs)
                )));
            }
            loss_sum += value as f64;
            let step = (epoch * steps + i) as f64;
            let lr = config.lr * 0.5 * (1.0 + (std::f64::consts::PI * step / total).cos());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            bar.inc();
        }
        bar.finish_and_clear();
        let acc = accuracy(
            &on_cpu(&model, &cpu),
            &data.test,
            norm,
            false,
            config.max_batches,
            &cpu,
        )?;
        println!(
            "epoch {}/{}: loss {:.4}, QAT fake-quant test accuracy {:.2}% ({:.1} s)",
            epoch + 1,
            config.epochs,
            loss_sum / steps.max(1) as f64,
            acc * 100.0,
            start.elapsed().as_secs_f64()
        );
        save_checkpoint(&model, &optim, out, epoch, config.epochs)?;
    }

    // 4. QAT fake-quant and QAT int8.
    let mut qat = on_cpu(&model, &cpu);
    let qat_path = out.join(format!("qat_epoch{}.bpk", config.epochs.saturating_sub(1)));
    rows.push(evaluate(
        format!(
            "QAT{} fake-quant{}",
            config.lsq_label(),
            config.bits_label()
        ),
        &qat,
        false,
        &qat_path,
    )?);
    convert(&mut qat, engine)?;
    let int8_path = out.join(format!("{name}_qat.int8.safetensors"));
    save_int8_model(&qat, &int8_path, &BTreeMap::new())?;
    rows.push(evaluate(
        format!(
            "QAT{} int8 ({engine}{})",
            config.lsq_label(),
            config.weight_label()
        ),
        &qat,
        true,
        &int8_path,
    )?);
    Ok(rows)
}
