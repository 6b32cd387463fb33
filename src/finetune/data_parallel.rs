//! Data-parallel QAT on several devices through burn-train's `Learner` (its multi-device
//! strategy, `ExecutionStrategy::MultiDevice` with the optimizer on the first device).
//!
//! Each optimizer step, every device (replica) runs forward and backward on its own batch —
//! the training split is cut into one contiguous shard per device, as burn-train does — and the
//! first device applies the gradients.
//!
//! # The rule for running statistics
//!
//! Observer ranges (`min_val`, `max_val`, the histogram) and batch-norm running statistics are
//! Burn `RunningState` buffers, shared by the replicas of one process. Within a step each replica
//! reads the value committed at the end of the previous step and records its own update from its
//! own batch, never another replica's (an observer uses the statistics it just computed instead
//! of reading the buffer back). At the optimizer step, [`commit_replica_statistics`] replaces
//! every buffer with the **mean of the replicas' updates** (Burn's `RunningState` rule), then
//! recomputes each fake-quant's scale and zero-point from the committed observer range (on the
//! device where the CPU kernels do not run: the commit reads nothing back to the host).
//!
//! For the moving-average statistics that QAT uses (batch norm, `MovingAverageMinMaxObserver`)
//! that is one averaging step with the mean of the per-replica batch statistics: with equal
//! shards the running mean of a batch norm is exactly the single-device one for the union of
//! the batches, its running variance is the mean of the shards' unbiased variances, and an
//! observer's range moves toward the mean of the shards' minima and maxima. PyTorch's DDP instead
//! keeps the first replica's buffers (`broadcast_buffers=True`), which ignores the other shards.
//! All replicas always see one committed state, so they cannot drift apart. With more than two
//! replicas the mean's summation order follows a hash map's, so results can differ in the last
//! bit from run to run.
//!
//! Gradients: burn-train sums the replicas' gradients; [`fit_data_parallel`] divides the
//! learning rate by the number of devices, which for SGD (with momentum, without weight decay)
//! is exactly training on the mean gradient, as DDP does.

use std::path::Path;
use std::sync::Arc;

use burn::config::Config;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_train::logger::InMemoryMetricLogger;
use burn_train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim,
    SupervisedTraining, TrainOutput, TrainStep, TrainingStrategy,
};

use crate::data::{ImageDataset, Transform};
use crate::nn::{ImageClassifier, Quantizable};
use crate::quantize::for_each_fake_quant;
use crate::{Error, Result};

/// Settings of [`fit_data_parallel`].
#[derive(Config, Debug)]
pub struct DataParallelConfig {
    /// Epochs over the training split.
    #[config(default = 1)]
    pub epochs: usize,
    /// Learning rate for the mean gradient (SGD with momentum 0.9, PyTorch's defaults otherwise).
    #[config(default = 0.01)]
    pub lr: f64,
    /// Images per replica and step.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Shuffle the training split each epoch (off: each device takes a contiguous block of it
    /// in order).
    #[config(default = true)]
    pub shuffle: bool,
    /// Shuffling seed.
    #[config(default = 2026)]
    pub seed: u64,
}

/// A batch on one replica's device: NCHW images and their labels.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// Transformed images, `[N, 3, H, W]`.
    pub images: Tensor<4>,
    /// Class labels, `[N]`.
    pub targets: Tensor<1, Int>,
}

/// One transformed image (CHW floats) and its label.
#[derive(Clone, Debug)]
struct Item {
    pixels: Arc<Vec<f32>>,
    label: usize,
}

/// Stacks pre-transformed images (all of one shape, checked when the dataset is built).
#[derive(Clone, Debug)]
struct ImageBatcher {
    shape: [usize; 3],
}

impl Batcher<Item, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> ImageBatch {
        let [c, h, w] = self.shape;
        let n = items.len();
        let mut data = Vec::with_capacity(n * c * h * w);
        let mut labels = Vec::with_capacity(n);
        for item in items {
            data.extend_from_slice(&item.pixels);
            labels.push(item.label as i64);
        }
        ImageBatch {
            images: Tensor::from_data(TensorData::new(data, [n, c, h, w]), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// The model as burn-train's `Learner` trains it: a classifier with cross-entropy loss that
/// commits the replicas' statistics at each optimizer step. A wrapper, as burn-train's traits
/// cannot be implemented for every `M` of another crate's choosing (orphan rule).
#[derive(Module, Debug)]
struct Trainee<M: ImageClassifier> {
    model: M,
}

impl<M: ImageClassifier> Trainee<M> {
    /// Logits, the cross-entropy loss and the targets of a batch.
    fn classify(&self, batch: ImageBatch) -> ClassificationOutput {
        let output = self.model.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, output, batch.targets)
    }

    /// The model after [`commit_replica_statistics`].
    fn committed(mut self) -> Self {
        commit_replica_statistics(&mut self.model);
        self
    }
}

impl<M: ImageClassifier> TrainStep for Trainee<M> {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        let grads = output.loss.backward();
        TrainOutput::new(self, grads, output)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        optim.step(lr, self, grads).committed()
    }

    fn optimize_multi(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: MultiGradientsParams,
    ) -> Self {
        optim.step_multi(lr, self, grads).committed()
    }
}

impl<M: ImageClassifier> InferenceStep for Trainee<M> {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// Commits the replicas' pending running-statistics updates (see the [module docs](self)):
/// every `RunningState` becomes the mean of the updates recorded since the last commit, then
/// each fake-quant with its observer on recomputes scale and zero-point from the committed
/// range. A no-op when nothing is pending; on one device it changes nothing.
pub fn commit_replica_statistics<M: Module + Quantizable>(model: &mut M) {
    // `valid()` folds each buffer's per-thread updates into its shared value (the copy it
    // returns is not needed).
    let _ = model.valid();
    for_each_fake_quant(model, |fq| fq.refresh_qparams());
    // The refreshed scales were recorded as this thread's updates: fold them in too.
    let _ = model.valid();
}

/// Trains `model` (any [`ImageClassifier`] prepared for QAT) on `devices` in parallel with
/// burn-train's `Learner` and returns it in training mode on the first device. Every device
/// gets `batch_size` images per step; the test split is evaluated on the first device after
/// each epoch (burn-train's validation pass). Training files (burn-train's event log) go to
/// `dir`.
///
/// Errors: no device, an empty split, a zero batch size, images of different sizes, or a
/// replica that failed (its panic message is returned).
pub fn fit_data_parallel<M: ImageClassifier>(
    model: M,
    train: &ImageDataset,
    valid: &ImageDataset,
    transform: &Transform,
    devices: &[Device],
    config: &DataParallelConfig,
    dir: &Path,
) -> Result<M> {
    if devices.is_empty() {
        return Err(Error::Config(
            "data-parallel training needs at least one device".into(),
        ));
    }
    if config.batch_size == 0 || train.is_empty() || valid.is_empty() {
        return Err(Error::Config(
            "data-parallel training needs a batch size of at least 1 and non-empty train and \
             test splits"
                .into(),
        ));
    }
    let devices: Vec<Device> = devices
        .iter()
        .map(|d| {
            if d.is_autodiff() {
                d.clone()
            } else {
                d.clone().autodiff()
            }
        })
        .collect();
    let (train_items, shape) = transformed(train, transform)?;
    let (valid_items, valid_shape) = transformed(valid, transform)?;
    if shape != valid_shape {
        return Err(Error::Shape(format!(
            "train images become {shape:?} but test images {valid_shape:?}; use one resize"
        )));
    }
    let loader = |items: Vec<Item>, shuffle: bool| {
        let builder = DataLoaderBuilder::new(ImageBatcher { shape }).batch_size(config.batch_size);
        let builder = if shuffle && config.shuffle {
            builder.shuffle(config.seed)
        } else {
            builder
        };
        builder.build(InMemDataset::new(items))
    };
    let optim: ModuleOptimizer = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    // burn-train sums the replicas' gradients: a 1/N learning rate trains on their mean.
    let lr = config.lr / devices.len() as f64;
    // A copy of its own (`valid()` folds in pending statistics updates and gives new buffers,
    // so the caller's model is not trained through shared state), trainable on the first device.
    let model = Trainee {
        model: model.valid().train().fork(&devices[0]),
    };
    let learner = Learner::new(model.committed(), optim, ConstantLr::new(lr));
    let training =
        SupervisedTraining::new(dir, loader(train_items, true), loader(valid_items, false))
            .num_epochs(config.epochs)
            .with_metric_logger(InMemoryMetricLogger::new())
            .with_application_logger(None)
            .with_training_strategy(TrainingStrategy::Default(ExecutionStrategy::multi(
                devices.clone(),
                MultiDeviceOptim::OptimMainDevice,
            )));
    let interrupter = training.interrupter();
    let result = training.launch(learner);
    if let Some(error) = interrupter.error() {
        return Err(Error::Training(format!(
            "data-parallel training failed: {error}"
        )));
    }
    Ok(result.model.model.train().fork(&devices[0]))
}

/// The dataset's images through `transform`, with their common CHW shape.
fn transformed(data: &ImageDataset, transform: &Transform) -> Result<(Vec<Item>, [usize; 3])> {
    let mut shape = None;
    let mut items = Vec::with_capacity(data.len());
    for (image, &label) in data.images.iter().zip(&data.labels) {
        let [h, w] = transform.output_size(image);
        match shape {
            None => shape = Some([3, h, w]),
            Some(s) if s != [3, h, w] => {
                return Err(Error::Shape(
                    "images of different sizes; add a resize or crop to the transform".into(),
                ));
            }
            Some(_) => {}
        }
        items.push(Item {
            pixels: Arc::new(transform.apply(image)?),
            label,
        });
    }
    Ok((items, shape.unwrap_or([3, 0, 0])))
}
