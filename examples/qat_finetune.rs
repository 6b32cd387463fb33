//! The main job: quantization-aware fine-tuning of MobileNetV2 (or, with `--arch resnet18` /
//! `mobilenet_v3_large`, ResNet-18 / MobileNetV3-Large) on real data, end to end.
//!
//! `cargo run --release --example qat_finetune` fine-tunes the shipped float MobileNetV2
//! (`assets/mobilenet_v2_mnist_float.bpk`, trained by `examples/train_float_mnist.rs` on the
//! embedded MNIST digits; `--arch A`: `assets/{A}_mnist_float.bpk`) with fake
//! quantization — ReLU6 → ReLU, `fuse_model(is_qat=true)`,
//! `prepare_qat`, a few epochs with observers switched off and batch norm frozen on schedule —
//! then converts it to int8 and prints float / PTQ int8 / QAT fake-quant / QAT int8 accuracy,
//! size and latency. Your own data: `--data DIR` (one sub-folder per class) or `--cifar10 DIR`
//! (the binary batches), with `--weights` for float weights of the same width and classes.
//! Low-bit weights: `--weight-bits 4` quantizes PTQ's and QAT's weights to [-8, 7]; `--lsq`
//! trains QAT's scales and zero-points too (LSQ).

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use burn_qat::data::{load_cifar10, load_image_folder, train_test_split};
use burn_qat::device::{check_device, parse_device};
use burn_qat::finetune::{
    FinetuneConfig, FinetuneData, FloatModel, Row, format_table, load_float_weights, run, run_with,
};
use burn_qat::models::{MobileNetV3Config, ResNetConfig};
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::QuantBackend;
use clap::Parser;

#[derive(Parser)]
#[command(about = "QAT fine-tuning, then int8 conversion and a comparison table")]
struct Args {
    /// The model: torchvision's MobileNetV2 (`--width-mult`), ResNet-18 (`--width`) or
    /// MobileNetV3-Large (`--width-mult`, `--reduced-tail`).
    #[arg(
        long,
        default_value = "mobilenet_v2",
        value_parser = ["mobilenet_v2", "resnet18", "mobilenet_v3_large"]
    )]
    arch: String,
    /// MobileNetV3's `reduced_tail` (the shipped MNIST MobileNetV3-Large has it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    reduced_tail: bool,
    /// ResNet's stem width (torchvision: 64; the shipped MNIST ResNet-18: 16).
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// An ImageFolder directory (a sub-folder per class) instead of the embedded digits.
    #[arg(long, value_name = "DIR", conflicts_with = "cifar10")]
    data: Option<PathBuf>,
    /// A CIFAR-10 binary directory (`data_batch_*.bin`, `test_batch.bin`).
    #[arg(long, value_name = "DIR")]
    cifar10: Option<PathBuf>,
    /// Float weights (burnpack) of --arch to start from; default: the shipped MNIST model
    /// for the embedded digits, none (from scratch) for your own data.
    #[arg(long, value_name = "FILE.bpk")]
    weights: Option<PathBuf>,
    /// QAT epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Peak learning rate (cosine decay).
    #[arg(long, default_value_t = 0.001, allow_negative_numbers = true)]
    lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// MobileNetV2 / MobileNetV3 width multiplier (must match the weights).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    width_mult: f64,
    /// Engine to train for and convert to.
    #[arg(long, default_value = "x86", value_parser = ["qnnpack", "x86"])]
    backend: String,
    /// Epoch from which observers stop updating the quantization ranges.
    #[arg(long, default_value_t = 2)]
    observer_off_epoch: usize,
    /// Epoch from which batch-norm statistics are frozen.
    #[arg(long, default_value_t = 1)]
    bn_freeze_epoch: usize,
    /// Input side for your own data (images are scaled to fit, centred).
    #[arg(long, default_value_t = 32)]
    input_size: usize,
    /// Training device: `flex` (CPU), `wgpu`, `wgpu:cpu`, `wgpu:N` (with `--features wgpu`),
    /// `cuda`, `cuda:N` (with `--features cuda`). Evaluation and int8 run on the CPU.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Where checkpoints, the int8 models and the table go.
    #[arg(long, default_value = "qat_out")]
    out: PathBuf,
    /// Continue after the last complete epoch checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// At most this many batches per epoch and evaluation (a quick look).
    #[arg(long)]
    max_batches: Option<usize>,
    /// Weight bits, 2 to 8 (4: weights in [-8, 7], held in int8), for PTQ and QAT.
    #[arg(long, default_value_t = 8)]
    weight_bits: u32,
    /// QAT with LSQ: scale and zero-point learned with the weights (PyTorch's
    /// `_LearnableFakeQuantize`), from --lsq-learn-epoch on.
    #[arg(long)]
    lsq: bool,
    /// With --lsq: the epoch from which scales are learned (before it: the observers' estimates).
    #[arg(long, default_value_t = 1)]
    lsq_learn_epoch: usize,
}

fn main() -> ExitCode {
    // One line per failure, as the `burn-qat` CLI prints them (not the Debug form that a
    // `main` returning `Result` prints).
    match run_job(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The run of `--arch` on a model other than MobileNetV2: `build` makes it, the float weights
/// (`weights`, if any; `fits` describes the model when they don't fit) are loaded into it.
fn run_model<M: ImageClassifier>(
    args: &Args,
    config: &FinetuneConfig,
    data: &FinetuneData,
    weights: &Option<PathBuf>,
    fits: &str,
    build: &dyn Fn(&Device) -> burn_qat::Result<M>,
    device: &Device,
) -> burn_qat::Result<Vec<Row>> {
    let build = |device: &Device| {
        let model = build(device)?;
        match weights {
            Some(path) => load_float_weights(model, path, fits),
            None => Ok(model),
        }
    };
    let model = FloatModel {
        name: &args.arch,
        build: &build,
    };
    run_with(config, data, &model, &args.out, args.resume, device)
}

fn run_job(args: Args) -> burn_qat::Result<()> {
    let backend = match args.backend.as_str() {
        "qnnpack" => QuantBackend::Qnnpack,
        _ => QuantBackend::X86,
    };
    let config = FinetuneConfig::new()
        .with_width_mult(args.width_mult)
        .with_epochs(args.epochs)
        .with_lr(args.lr)
        .with_batch_size(args.batch_size)
        .with_backend(backend)
        .with_observer_off_epoch(args.observer_off_epoch)
        .with_bn_freeze_epoch(args.bn_freeze_epoch)
        .with_max_batches(args.max_batches)
        .with_weight_bits(args.weight_bits)
        .with_lsq(args.lsq)
        .with_lsq_learn_epoch(args.lsq_learn_epoch);
    // Every flag is checked before any data is read or any epoch is trained.
    config.validate()?;
    let device = parse_device(&args.device)?;
    check_device(&device)?;
    let own_data = args.data.is_some() || args.cifar10.is_some();
    let data = if let Some(dir) = &args.data {
        let (train, test) = train_test_split(&load_image_folder(dir)?, 0.2, 2026);
        FinetuneData::fitted(train, test, args.input_size)?
    } else if let Some(dir) = &args.cifar10 {
        let (train, test) = (load_cifar10(dir, false)?, load_cifar10(dir, true)?);
        FinetuneData::fitted(train, test, args.input_size)?
    } else {
        FinetuneData::embedded_mnist()?
    };
    let weights = args.weights.clone().or_else(|| {
        (!own_data).then(|| {
            let file = format!("assets/{}_mnist_float.bpk", args.arch);
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file)
        })
    });
    println!(
        "QAT fine-tuning of {}: {} train / {} test images, {} epochs, {backend:?}, {}-bit weights{}, \
         weights {}",
        args.arch,
        data.train.len(),
        data.test.len(),
        args.epochs,
        args.weight_bits,
        if args.lsq { ", LSQ" } else { "" },
        weights
            .as_ref()
            .map_or("none (from scratch)".into(), |p| p.display().to_string())
    );
    let device = device.autodiff();
    let start = std::time::Instant::now();
    let classes = burn_qat::finetune::class_count(&data.train);
    let rows = match args.arch.as_str() {
        "resnet18" => {
            let resnet = ResNetConfig::resnet18()
                .with_width(args.width)
                .with_num_classes(classes);
            let fits = format!("ResNet-18 of width {} with {classes} classes", args.width);
            let build = |device: &Device| resnet.init(device);
            run_model(&args, &config, &data, &weights, &fits, &build, &device)?
        }
        "mobilenet_v3_large" => {
            let mnv3 = MobileNetV3Config::large()
                .with_width_mult(args.width_mult)
                .with_reduced_tail(args.reduced_tail)
                .with_num_classes(classes);
            let fits = format!(
                "MobileNetV3-Large of width {}, reduced tail {}, with {classes} classes",
                args.width_mult, args.reduced_tail
            );
            let build = |device: &Device| mnv3.init(device);
            run_model(&args, &config, &data, &weights, &fits, &build, &device)?
        }
        _ => run(
            &config,
            &data,
            weights.as_deref(),
            &args.out,
            args.resume,
            &device,
        )?,
    };
    let table = format_table(&rows);
    println!("\n{table}");
    println!(
        "total {:.0} s; int8 model: {}",
        start.elapsed().as_secs_f64(),
        args.out
            .join(format!("{}_qat.int8.safetensors", args.arch))
            .display()
    );
    burn_qat::io::atomic::write_atomic(&args.out.join("table.md"), |f| {
        std::io::Write::write_all(f, table.as_bytes())
    })?;
    Ok(())
}
