//! Train a float model on the embedded MNIST digits — the float starting point that QAT
//! fine-tunes: `cargo run --release --example train_float_mnist [-- --arch resnet18]`
//! (defaults = the recipe of the shipped `assets/mobilenet_v2_mnist_float.bpk`; with
//! `--arch resnet18 --epochs 15`, the one of `assets/resnet18_mnist_float.bpk`; see
//! `assets/README.md`).
//!
//! 4,000 training / 1,000 test digits (`train_test_split(.., 0.2, 2026)`), resized to 32×32
//! and replicated to RGB (`Transform { resize: Some([32, 32]), normalize: Normalize::MNIST }`:
//! the evaluation preprocessing, which fine-tuning and evaluating the checkpoint must reuse).
//! Training digits are resized and jittered in one step by the seeded
//! `RandomAffine::MNIST_32` (±10°, ×0.9–1.1, ±3 px). SGD with momentum, weight decay, label
//! smoothing, a linear warm-up then a cosine learning rate; the loss and test accuracy are
//! printed every epoch and the weights of the last epoch are saved with burn-store (`.bpk`,
//! written atomically). No model selection on the test split: the recipe is fixed.
//!
//! `--holdout F` tunes without touching the test split: a seeded fraction `F` of the 4,000
//! training digits is held out and reported instead of the test accuracy.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_qat::data::mnist::MNIST_SIDE;
use burn_qat::data::{
    EmbeddedMnist, Image, ImageDataset, Normalize, RandomAffine, SplitMix64, Transform,
    shuffled_indices, train_test_split,
};
use burn_qat::io::atomic::write_atomic;
use burn_qat::models::{MobileNetV2, MobileNetV2Config, MobileNetV3Config, ResNetConfig};
use burn_qat::nn::ImageClassifier;
use burn_store::{BurnpackStore, ModuleSnapshot};
use clap::Parser;

/// The architectures this example trains.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Arch {
    /// torchvision's MobileNetV2 (`--width-mult`, `--dropout`).
    #[value(name = "mobilenet_v2")]
    MobileNetV2,
    /// torchvision's ResNet-18 at stem width `--width` (torchvision: 64).
    #[value(name = "resnet18")]
    ResNet18,
    /// torchvision's MobileNetV3-Large (`--width-mult`, `--dropout`).
    #[value(name = "mobilenet_v3_large")]
    MobileNetV3Large,
}

#[derive(Parser)]
struct Args {
    /// The model to train.
    #[arg(long, value_enum, default_value = "mobilenet_v2")]
    arch: Arch,
    /// ResNet's stem width (stage k has width·2^(k−1) planes; torchvision's is 64).
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 45)]
    epochs: usize,
    /// Peak learning rate (after warm-up; cosine decay to 0).
    #[arg(long, default_value_t = 0.02)]
    lr: f64,
    /// Linear learning-rate warm-up, in epochs.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// SGD momentum (no dampening).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// L2 weight decay (all parameters).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f32,
    /// Label smoothing (0 = off).
    #[arg(long, default_value_t = 0.1)]
    smoothing: f32,
    /// MobileNetV2 / MobileNetV3 width multiplier.
    #[arg(long, default_value_t = 0.5)]
    width_mult: f64,
    /// MobileNetV3's `reduced_tail` (last stage's channels halved; the shipped MNIST model has
    /// it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    reduced_tail: bool,
    /// Dropout before the classifier.
    #[arg(long, default_value_t = 0.2)]
    dropout: f64,
    /// Input side: the 28×28 digits are resized to this.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Augmentation: largest rotation, degrees.
    #[arg(long, default_value_t = 10.0)]
    degrees: f32,
    /// Augmentation: largest shift, pixels.
    #[arg(long, default_value_t = 3.0)]
    translate: f32,
    /// Augmentation: scale range is 1 ± this.
    #[arg(long, default_value_t = 0.1)]
    scale: f32,
    /// Seed of the weight initialisation, dropout, shuffles and augmentation (the train/test
    /// split always uses 2026).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Hold out this fraction of the training digits and report it instead of the test split
    /// (for tuning); 0 trains on all 4,000 and reports the test split.
    #[arg(long, default_value_t = 0.0)]
    holdout: f64,
    /// Where to save the weights (`.bpk` is appended when there is no extension); default
    /// `{arch}_mnist_float.bpk`.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The seed of the train/test split, shared with the QAT example.
const SPLIT_SEED: u64 = 2026;

fn batch(
    t: &Transform,
    images: &[&Image],
    labels: &[usize],
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let x = t.batch(images, device).expect("same-size images");
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let y = Tensor::from_data(TensorData::new(labels, [images.len()]), device);
    (x, y)
}

/// Accuracy of `model` on `data`.
fn accuracy<M: ImageClassifier>(
    model: &M,
    data: &ImageDataset,
    t: &Transform,
    device: &Device,
) -> f64 {
    let mut correct = 0;
    for start in (0..data.len()).step_by(250) {
        let end = (start + 250).min(data.len());
        let images: Vec<&Image> = data.images[start..end].iter().collect();
        let (x, y) = batch(t, &images, &data.labels[start..end], device);
        let pred = model.forward(x).argmax(1).flatten::<1>(0, 1);
        correct += pred.equal(y).int().sum().into_scalar::<i64>() as usize;
    }
    correct as f64 / data.len() as f64
}

/// torchvision initialises every convolution with `kaiming_normal_(mode="fan_out")`, whose
/// fan-out is `out_channels·k²` for a depthwise convolution too; burn-nn's `Conv2d` divides it by
/// the groups, which makes depthwise weights √groups times larger (×10 at 96 channels) and,
/// behind batch norm, trains them that much more slowly. Rescales them to torchvision's
/// distribution (the only grouped convolutions of MobileNetV2 are the depthwise ones).
fn torchvision_depthwise_init(mut model: MobileNetV2) -> MobileNetV2 {
    for block in &mut model.blocks {
        rescale_depthwise(&mut block.depthwise.conv);
    }
    model
}

/// Divides a grouped convolution's weights by √groups (see [`torchvision_depthwise_init`]).
fn rescale_depthwise(conv: &mut burn::nn::conv::Conv2d) {
    let factor = (conv.groups as f64).sqrt();
    conv.weight = conv
        .weight
        .clone()
        .map(|w| w.div_scalar(factor).detach().require_grad());
}

fn main() -> burn_qat::Result<()> {
    let args = Args::parse();
    let device = Device::flex().autodiff();
    device.seed(args.seed);
    match args.arch {
        Arch::MobileNetV2 => {
            let config = MobileNetV2Config::new()
                .with_num_classes(10)
                .with_width_mult(args.width_mult)
                .with_dropout(args.dropout);
            let model = torchvision_depthwise_init(config.init(&device)?);
            let what = format!(
                "MobileNetV2 width {}, dropout {}",
                args.width_mult, args.dropout
            );
            train(&args, model, &what, "mobilenet_v2", &device)
        }
        Arch::ResNet18 => {
            let config = ResNetConfig::resnet18()
                .with_num_classes(10)
                .with_width(args.width);
            let what = format!("ResNet-18 width {}", args.width);
            train(&args, config.init(&device)?, &what, "resnet18", &device)
        }
        Arch::MobileNetV3Large => {
            let config = MobileNetV3Config::large()
                .with_num_classes(10)
                .with_width_mult(args.width_mult)
                .with_reduced_tail(args.reduced_tail)
                .with_dropout(args.dropout);
            let what = format!(
                "MobileNetV3-Large width {}{}, dropout {}",
                args.width_mult,
                if args.reduced_tail {
                    ", reduced tail"
                } else {
                    ""
                },
                args.dropout
            );
            let mut model = config.init(&device)?;
            for block in &mut model.blocks {
                rescale_depthwise(&mut block.depthwise.conv.conv);
            }
            train(&args, model, &what, "mobilenet_v3_large", &device)
        }
    }
}

/// Trains `model` (`what` describes it) by the recipe of `args` and saves it.
fn train<M: ImageClassifier>(
    args: &Args,
    mut model: M,
    what: &str,
    arch: &str,
    device: &Device,
) -> burn_qat::Result<()> {
    let data = EmbeddedMnist::load()?;
    let (mut train, mut eval) = train_test_split(&data, 0.2, SPLIT_SEED);
    let t = Transform {
        resize: Some([args.size, args.size]),
        center_crop: None,
        normalize: Normalize::MNIST,
    };
    let mut eval_name = "test";
    if args.holdout > 0.0 {
        (train, eval) = train_test_split(&train, args.holdout, args.seed);
        eval_name = "holdout";
    }
    // Training only: the digit scaled to fill the canvas as `t`'s resize does (×size/28), then
    // a random rotation, scale and shift, in one resampling (`t`'s resize is then the
    // identity). With the default flags this is `RandomAffine::MNIST_32`.
    let zoom = args.size as f32 / MNIST_SIDE as f32;
    let augment = RandomAffine {
        size: [args.size, args.size],
        degrees: args.degrees,
        translate: args.translate,
        scale: [(1.0 - args.scale) * zoom, (1.0 + args.scale) * zoom],
    };
    let momentum = MomentumConfig::new()
        .with_momentum(args.momentum)
        .with_dampening(0.0)
        .with_nesterov(args.nesterov);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(momentum))
        .with_weight_decay(
            (args.weight_decay > 0.0).then(|| WeightDecayConfig::new(args.weight_decay)),
        )
        .init();
    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing((args.smoothing > 0.0).then_some(args.smoothing))
        .init(device);
    let steps_per_epoch = train.len().div_ceil(args.batch_size);
    let total = (steps_per_epoch * args.epochs) as f64;
    let warmup = (args.warmup * steps_per_epoch as f64).min(total);
    let lr_at = |step: usize| {
        let s = step as f64 + 1.0;
        if s <= warmup {
            args.lr * s / warmup
        } else {
            let t = (s - warmup) / (total - warmup).max(1.0);
            args.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    };
    println!(
        "train {what} on {} / {eval_name} {} digits at {}×{}, {} epochs, batch {}, lr {} \
         (warm-up {} epochs, cosine), momentum {}{}, weight decay {}, smoothing {}, \
         augmentation ±{}° ±{} px scale ±{}, seed {}",
        train.len(),
        eval.len(),
        args.size,
        args.size,
        args.epochs,
        args.batch_size,
        args.lr,
        args.warmup,
        args.momentum,
        if args.nesterov { " (Nesterov)" } else { "" },
        args.weight_decay,
        args.smoothing,
        args.degrees,
        args.translate,
        args.scale,
        args.seed
    );
    let run_start = Instant::now();
    let mut step = 0;
    for epoch in 0..args.epochs {
        let start = Instant::now();
        let epoch_seed = args.seed.wrapping_add(epoch as u64);
        let order = shuffled_indices(train.len(), epoch_seed);
        // One augmentation stream per epoch, drawn in the shuffled order.
        let mut rng = SplitMix64::new(epoch_seed ^ 0xA076_1D64_78BD_642F);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(args.batch_size) {
            let images: Vec<Image> = chunk
                .iter()
                .map(|&i| augment.apply(&train.images[i], &mut rng))
                .collect();
            let labels: Vec<usize> = chunk.iter().map(|&i| train.labels[i]).collect();
            let (x, y) = batch(&t, &images.iter().collect::<Vec<_>>(), &labels, device);
            let loss = loss_fn.forward(model.forward(x), y);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr_at(step), model, grads);
            step += 1;
        }
        let acc = accuracy(&model.valid(), &eval, &t, &Device::flex());
        println!(
            "epoch {:2}: loss {:.4}, {eval_name} accuracy {:.2}% ({:.1} s)",
            epoch + 1,
            loss_sum / steps_per_epoch as f64,
            acc * 100.0,
            start.elapsed().as_secs_f64()
        );
        std::io::stdout().flush().ok();
    }
    println!(
        "trained in {:.1} min",
        run_start.elapsed().as_secs_f64() / 60.0
    );

    let mut out = args
        .out
        .clone()
        .unwrap_or_else(|| format!("{arch}_mnist_float").into());
    if out.extension().is_none() {
        out.set_extension("bpk");
    }
    let save_err = |e: String| burn_qat::Error::Config(format!("saving {}: {e}", out.display()));
    let mut store = BurnpackStore::from_bytes(None);
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| save_err(e.to_string()))?;
    let bytes = store.get_bytes().map_err(|e| save_err(e.to_string()))?;
    write_atomic(&out, |f| f.write_all(&bytes))?;
    println!("saved {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}
