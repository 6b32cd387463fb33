//! `burn-qat`: the command-line face of the crate. It only parses arguments and calls the
//! library; every failure is one line on stderr and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use burn_qat::bench::{BenchOptions, BenchReport, bench_model};
use burn_qat::device::{check_device, parse_device};
use burn_qat::export::ExportKind;
use burn_qat::infer::{WeightsKind, infer_npy, load_weights};
use burn_qat::int8::Engine;
use burn_qat::models::{Arch, ArchOptions, ArchVisitor, TorchvisionConfig, TorchvisionModel};
use burn_qat::nn::ImageClassifier;
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

/// Which checkpoint to load, of which architecture (shared by the subcommands).
#[derive(Args)]
struct ModelArgs {
    /// The architecture, named as torchvision's builder: mobilenet_v2, resnet18, resnet50,
    /// resnext101_32x8d, resnext101_64x4d, mobilenet_v3_large, mobilenet_v3_small,
    /// shufflenet_v2_x0_5, shufflenet_v2_x1_0, shufflenet_v2_x1_5 or shufflenet_v2_x2_0.
    #[arg(long, default_value = "mobilenet_v2")]
    arch: String,
    /// torchvision state dict of that architecture (`.pth`, zip or legacy format), or with
    /// --quantized: torchvision's int8 state dict or an int8 model saved by this crate.
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// The weights are an int8 model (run on the int8 kernels; exported as a QDQ graph).
    #[arg(long)]
    quantized: bool,
    /// Whose int8 arithmetic to reproduce for a torchvision int8 `.pth` (the crate's own int8
    /// files name their engine) [default: the backend torchvision's builder quantizes the
    /// architecture for: qnnpack for the MobileNets, x86 (fbgemm) for ResNet and ShuffleNetV2].
    #[arg(long, value_parser = ["qnnpack", "x86", "fbgemm"])]
    engine: Option<String>,
    /// Width multiplier the checkpoint was built with (mobilenet_v2 only) [default: 1.0].
    #[arg(long, allow_negative_numbers = true)]
    width_mult: Option<f64>,
    /// Number of classes of the checkpoint's classifier.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
}

impl ModelArgs {
    /// The architecture, its options and what kind of weights the file holds.
    fn resolve(&self) -> burn_qat::Result<(Arch, ArchOptions, Kind)> {
        let arch: Arch = self.arch.parse()?;
        let options = ArchOptions {
            num_classes: Some(self.num_classes),
            width_mult: self.width_mult,
        };
        let kind = match (self.quantized, &self.engine) {
            (true, Some(engine)) => Kind::Int8(Some(engine.parse()?)),
            (true, None) => Kind::Int8(None),
            (false, _) => Kind::Float,
        };
        Ok((arch, options, kind))
    }
}

/// What the weights file holds, before the architecture's default engine is known.
#[derive(Clone, Copy)]
enum Kind {
    Float,
    /// int8, with the engine `--engine` named, if any.
    Int8(Option<Engine>),
}

impl Kind {
    /// The kind for `M`: an int8 engine not named is the backend torchvision's builder
    /// quantizes `M` for.
    fn of<M: TorchvisionModel>(self) -> burn_qat::Result<WeightsKind> {
        Ok(match self {
            Kind::Float => WeightsKind::Float,
            Kind::Int8(Some(engine)) => WeightsKind::Int8(engine),
            Kind::Int8(None) => WeightsKind::Int8(Engine::from_backend(M::DEFAULT_BACKEND)?),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a checkpoint (--arch, MobileNetV2 by default) on a batch of images (float, or int8
    /// with --quantized).
    Infer {
        #[command(flatten)]
        model: ModelArgs,
        /// Input batch: float32 NCHW `.npy`, `[N, 3, H, W]`, H and W at least 32 (1 for ShuffleNetV2).
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
    /// Write a checkpoint (--arch) as ONNX (opset 13): an int8 model (--quantized) as a QDQ
    /// graph with int8 weights, a float one as a float graph. Input `input` (float32 NCHW,
    /// dynamic batch), output `logits`.
    Export {
        #[command(flatten)]
        model: ModelArgs,
        /// Where to write the `.onnx` file (atomically).
        #[arg(long, value_name = "MODEL.onnx")]
        output: PathBuf,
    },
    /// Time one forward pass of a checkpoint (--arch; float on --device, or int8 with
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
    /// Height and width of the square input, at least 32 (1 for ShuffleNetV2).
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
    /// Print one JSON object (path, arch, engine, width_mult, num_classes, input_size, batch,
    /// threads, warmup, iters, median_ms, min_ms, images_per_s) instead of a table line.
    #[arg(long)]
    json: bool,
    /// Device for a float checkpoint: flex (CPU), or wgpu / cuda with those cargo features.
    /// int8 models run on the CPU.
    #[arg(long, default_value = "flex")]
    device: String,
}

/// The device `--device` names, started; int8 models only run on the CPU.
fn device_for(name: &str, kind: Kind) -> burn_qat::Result<Device> {
    let device = parse_device(name)?;
    if matches!(kind, Kind::Int8(_)) && device != Device::flex() {
        return Err(burn_qat::Error::Config(format!(
            "int8 models run on the CPU int8 kernels; drop --device {name} (or pass flex)"
        )));
    }
    check_device(&device)?;
    Ok(device)
}

/// `infer`: logits of an `.npy` batch.
struct Infer<'a> {
    weights: &'a Path,
    kind: Kind,
    input: &'a Path,
    output: &'a Path,
    device: Device,
}

impl ArchVisitor for Infer<'_> {
    type Output = [usize; 2];

    fn visit<C: TorchvisionConfig>(self, _: Arch, config: C) -> burn_qat::Result<[usize; 2]> {
        let Infer {
            weights,
            kind,
            input,
            output,
            device,
        } = self;
        infer_npy(
            weights,
            &config,
            kind.of::<C::Model>()?,
            input,
            output,
            &device,
        )
    }
}

/// `export`: the checkpoint as ONNX.
struct Export<'a> {
    weights: &'a Path,
    kind: Kind,
    output: &'a Path,
}

impl ArchVisitor for Export<'_> {
    type Output = ();

    fn visit<C: TorchvisionConfig>(self, _: Arch, config: C) -> burn_qat::Result<()> {
        let kind = self.kind.of::<C::Model>()?;
        let export = match kind {
            WeightsKind::Int8(_) => ExportKind::Int8,
            WeightsKind::Float => ExportKind::Float,
        };
        let loaded = load_weights(self.weights, &config, kind, &Device::flex())?;
        ImageClassifier::export_onnx(&loaded, export, self.output)
    }
}

/// `bench`: one forward pass timed.
struct Bench<'a> {
    weights: &'a Path,
    kind: Kind,
    options: BenchOptions,
    device: Device,
}

impl ArchVisitor for Bench<'_> {
    type Output = BenchReport;

    fn visit<C: TorchvisionConfig>(self, _: Arch, config: C) -> burn_qat::Result<BenchReport> {
        let kind = self.kind.of::<C::Model>()?;
        bench_model(self.weights, &config, kind, self.options, &self.device)
    }
}

fn run(cli: Cli) -> burn_qat::Result<()> {
    match cli.command {
        Command::Infer {
            model,
            input,
            output,
            device,
        } => {
            let (arch, options, kind) = model.resolve()?;
            let device = device_for(&device, kind)?;
            let infer = Infer {
                weights: &model.weights,
                kind,
                input: &input,
                output: &output,
                device,
            };
            let shape = arch.with_config(&options, infer)?;
            eprintln!("wrote {shape:?} logits to {}", output.display());
            Ok(())
        }
        Command::Export { model, output } => {
            let (arch, options, kind) = model.resolve()?;
            let export = Export {
                weights: &model.weights,
                kind,
                output: &output,
            };
            arch.with_config(&options, export)?;
            eprintln!("wrote {}", output.display());
            Ok(())
        }
        Command::Bench { model, options } => {
            let (arch, arch_options, kind) = model.resolve()?;
            let bench = Bench {
                weights: &model.weights,
                kind,
                options: BenchOptions {
                    batch: options.batch,
                    input_size: options.input_size,
                    threads: options.threads,
                    warmup: options.warmup,
                    iters: options.iters,
                },
                device: device_for(&options.device, kind)?,
            };
            let report = arch.with_config(&arch_options, bench)?;
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
