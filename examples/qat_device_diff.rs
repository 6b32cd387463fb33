//! One QAT training step of the same MobileNetV2 (same weights, same batch, dropout off) on two
//! devices, and every trainable parameter whose gradient differs between them: the tool behind
//! the README's open wgpu problem (`--size 32` shows it on lavapipe, `--size 64` does not).
//!
//! ```text
//! XDG_RUNTIME_DIR=/tmp cargo run --release --features wgpu --example qat_device_diff -- \
//!     --devices flex,wgpu:cpu --size 32 --batch 8 --width 0.25
//! ```

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use burn_qat::device::{check_device, parse_device};
use burn_qat::models::MobileNetV2Config;
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{disable_fake_quant, disable_observer, prepare_qat, replace_relu};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The two devices, comma-separated.
    #[arg(long, default_value = "flex,wgpu:cpu")]
    devices: String,
    /// Input side.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Width multiplier.
    #[arg(long, default_value_t = 0.25)]
    width: f64,
    /// Fake quantization off (observers stay on unless `--no-observers`).
    #[arg(long)]
    no_fake_quant: bool,
    /// Observers off.
    #[arg(long)]
    no_observers: bool,
    /// Relative difference (of the largest gradient) that counts as a mismatch.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f32,
}

/// Every trainable parameter's gradient, with the parameter's path.
struct Grads<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Grads<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let grad = value.grad(self.grads).map_or_else(Vec::new, |g| {
                g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
            });
            self.out.push((self.path.join("."), grad));
        }
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn main() -> burn_qat::Result<()> {
    let args = Args::parse();
    let config = MobileNetV2Config::new()
        .with_num_classes(10)
        .with_width_mult(args.width)
        .with_dropout(0.0);
    let record = config.init(&Device::flex())?.into_record();
    let (b, s) = (args.batch, args.size);
    let pixels: Vec<f32> = (0..b * 3 * s * s)
        .map(|i| (((i * 7919) % 1013) as f32 / 1013.0 - 0.5) * 3.0)
        .collect();
    let labels: Vec<i64> = (0..b as i64).map(|i| i % 10).collect();
    let names: Vec<&str> = args.devices.split(',').collect();
    if names.len() != 2 {
        return Err(burn_qat::Error::Config(
            "--devices takes exactly two devices, comma-separated".into(),
        ));
    }
    let mut runs = Vec::new();
    for name in names {
        let device = parse_device(name)?;
        check_device(&device)?;
        let device = device.autodiff();
        let mut model = config.init(&device)?.load_record(record.clone());
        replace_relu(&mut model)?;
        model.fuse_model(Some(true))?;
        prepare_qat(
            &mut model,
            QConfig::default_qat(QuantBackend::Qnnpack),
            &device,
        )?;
        if args.no_fake_quant {
            disable_fake_quant(&mut model);
        }
        if args.no_observers {
            disable_observer(&mut model);
        }
        let x = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [b, 3, s, s]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [b]), &device);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(x), y);
        let value = loss
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>();
        println!("{name}: loss {:?}", value.unwrap_or_default());
        let grads = loss.backward();
        let mut visitor = Grads {
            grads: &grads,
            path: Vec::new(),
            out: Vec::new(),
        };
        model.visit(&mut visitor);
        runs.push(visitor.out);
    }
    let (first, second) = (&runs[0], &runs[1]);
    let mut mismatches = 0;
    for ((path, a), (_, b)) in first.iter().zip(second) {
        let (ma, mb) = (max_abs(a), max_abs(b));
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        if diff > args.tolerance * ma.max(1e-6) || !mb.is_finite() {
            mismatches += 1;
            println!("{path}: max |grad| {ma:e} / {mb:e}, max diff {diff:e}");
        }
    }
    println!("{mismatches} of {} gradients differ", first.len());
    Ok(())
}
