//! `burn-qat`: the command-line face of the crate. It only parses arguments and calls the
//! library; every failure is one line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use burn_qat::bench::{BenchOptions, bench_mobilenet_v2};
use burn_qat::device::{check_device, parse_device};
use burn_qat::export::ExportKind;
use burn_qat::infer::{WeightsKind, load_weights};
use burn_qat::models::MobileNetV2Config;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "burn-qat",
    version,
    about = "PyTorch-style quantization workflow on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which MobileNetV2 checkpoint to load (shared by the subcommands).
#[derive(Args)]
struct ModelArgs {
    /// torchvision MobileNetV2 state dict (`.pth`, zip or legacy format), or with
    /// --quantized: torchvision's int8 state dict or an int8 model saved by this crate.
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// The weights are an int8 model (run on the int8 kernels; exported as a QDQ graph).
    #[arg(long)]
    quantized: bool,
    /// Whose int8 arithmetic to reproduce for a torchvision int8 `.pth` (the crate's own int8
    /// files name their engine).
    #[arg(long, default_value = "qnnpack", value_parser = ["qnnpack", "x86", "fbgemm"])]
    engine: String,
    /// Width multiplier the checkpoint was built with.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    width_mult: f64,
    /// Number of classes of the checkpoint's classifier.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
}

impl ModelArgs {
    /// The checked configuration and what kind of weights the file holds.
    fn resolve(&self) -> burn_qat::Result<(MobileNetV2Config, WeightsKind)> {
        let config = MobileNetV2Config::new()
            .with_width_mult(self.width_mult)
            .with_num_classes(self.num_classes);
        let flags = format!(
            "--width-mult {} --num-classes {}",
            self.width_mult, self.num_classes
        );
        config
            .validate()
            .and_then(|()| config.check_model_size())
            .map_err(|e| e.for_flags(flags))?;
        let kind = if self.quantized {
            WeightsKind::Int8(self.engine.parse()?)
        } else {
            WeightsKind::Float
        };
        Ok((config, kind))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a MobileNetV2 checkpoint on a batch of images (float, or int8 with --quantized).
    Infer {
        #[command(flatten)]
        model: ModelArgs,
        /// Input batch: float32 NCHW `.npy`, `[N, 3, H, W]`, H and W at least 32.
        #[arg(long, value_name = "X.npy")]
        input: PathBuf,
        /// Where to write the float32 `[N, num_classes]` logits (`.npy`).
        #[arg(long, value_name = "Y.npy")]
        output: PathBuf,
        /// Device for a float checkpoint: flex (CPU), or wgpu / cuda with those cargo
        /// features (see `burn_qat::device`). int8 models run on the CPU.
        #[arg(long, default_value = "flex")]
        device: String,
    },
    /// Write a MobileNetV2 checkpoint as ONNX (opset 13): an int8 model (--quantized) as a QDQ
    /// graph with int8 weights, a float one as a float graph. Input `input` (float32 NCHW,
    /// dynamic batch), output `logits`.
    Export {
        #[command(flatten)]
        model: ModelArgs,
        /// Where to write the `.onnx` file (atomically).
        #[arg(long, value_name = "MODEL.onnx")]
        output: PathBuf,
    },
    /// Time one forward pass of a MobileNetV2 checkpoint (float on --device, or int8 with
    /// --quantized) on a fixed [B, 3, S, S] batch, logits read back: prints median and min
    /// latency and images/s, as a table line or (--json) one JSON object on stdout.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        options: BenchArgs,
    },
}

/// How `bench` measures (see `burn_qat::bench::BenchOptions`).
#[derive(Args)]
struct BenchArgs {
    /// Height and width of the square input, at least 32.
    #[arg(long, default_value_t = 224)]
    input_size: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Threads for the float and the int8 kernels (rayon's global pool, shared by both);
    /// default: RAYON_NUM_THREADS, else one per logical CPU.
    #[arg(long)]
    threads: Option<usize>,
    /// Untimed forward passes before the timed ones.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed forward passes (median and min are taken over these).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Print one JSON object (path, engine, width_mult, num_classes, input_size, batch,
    /// threads, warmup, iters, median_ms, min_ms, images_per_s) instead of a table line.
    #[arg(long)]
    json: bool,
    /// Device for a float checkpoint: flex (CPU), or wgpu / cuda with those cargo features.
    /// int8 models run on the CPU.
    #[arg(long, default_value = "flex")]
    device: String,
}

/// The device `--device` names, started; int8 models only run on the CPU.
fn device_for(name: &str, kind: WeightsKind) -> burn_qat::Result<Device> {
    let device = parse_device(name)?;
    if matches!(kind, WeightsKind::Int8(_)) && device != Device::flex() {
        return Err(burn_qat::Error::Config(format!(
            "int8 models run on the CPU int8 kernels; drop --device {name} (or pass flex)"
        )));
    }
    check_device(&device)?;
    Ok(device)
}

fn run(cli: Cli) -> burn_qat::Result<()> {
    match cli.command {
        Command::Infer {
            model,
            input,
            output,
            device,
        } => {
            let (config, kind) = model.resolve()?;
            let device = device_for(&device, kind)?;
            let shape = burn_qat::infer::infer_npy(
                &model.weights,
                &config,
                kind,
                &input,
                &output,
                &device,
            )?;
            eprintln!("wrote {shape:?} logits to {}", output.display());
            Ok(())
        }
        Command::Export { model, output } => {
            let (config, kind) = model.resolve()?;
            let export = match kind {
                WeightsKind::Int8(_) => ExportKind::Int8,
                WeightsKind::Float => ExportKind::Float,
            };
            let loaded = load_weights(&model.weights, &config, kind, &Device::flex())?;
            loaded.export_onnx(export, &output)?;
            eprintln!("wrote {}", output.display());
            Ok(())
        }
        Command::Bench { model, options } => {
            let (config, kind) = model.resolve()?;
            let opts = BenchOptions {
                batch: options.batch,
                input_size: options.input_size,
                threads: options.threads,
                warmup: options.warmup,
                iters: options.iters,
            };
            let device = device_for(&options.device, kind)?;
            let report = bench_mobilenet_v2(&model.weights, &config, kind, opts, &device)?;
            if options.json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
