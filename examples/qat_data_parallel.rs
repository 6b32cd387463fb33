//! Data-parallel QAT through burn-train's `Learner`: the shipped float MobileNetV2 (the main
//! job's starting point) prepared for QAT and fine-tuned on several devices at once, then
//! converted to int8 and evaluated on the CPU.
//!
//! `cargo run --release --example qat_data_parallel -- --devices flex,flex` runs two replicas on
//! the CPU; `--devices wgpu:0,wgpu:1` or `cuda:0,cuda:1` (with `--features wgpu` / `cuda`) put
//! them on GPUs. How observer and batch-norm statistics stay one state across replicas:
//! `burn_qat::finetune::data_parallel`.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::Device;
use burn_qat::convert::convert;
use burn_qat::data::ImageDataset;
use burn_qat::device::{check_device, parse_device};
use burn_qat::finetune::data_parallel::{DataParallelConfig, fit_data_parallel};
use burn_qat::finetune::{FinetuneConfig, FinetuneData, accuracy, qat_model};
use burn_qat::int8::Engine;
use burn_qat::quant::QuantBackend;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Data-parallel QAT of MobileNetV2 on several devices, then int8 conversion")]
struct Args {
    /// Comma-separated devices, one replica each (`flex,flex`, `wgpu:0,wgpu:1`, `cuda:0,cuda:1`).
    #[arg(long, default_value = "flex,flex")]
    devices: String,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Learning rate (for the mean of the replicas' gradients).
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    /// Images per replica and step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Train on the first N training digits (all 4,000 by default).
    #[arg(long)]
    max_images: Option<usize>,
    /// Where burn-train writes its event log.
    #[arg(long, default_value = "qat_out/data_parallel")]
    out: PathBuf,
}

fn main() -> burn_qat::Result<()> {
    let args = Args::parse();
    let devices = args
        .devices
        .split(',')
        .map(|name| {
            let device = parse_device(name)?;
            check_device(&device)?;
            Ok(device)
        })
        .collect::<burn_qat::Result<Vec<Device>>>()?;
    let data = FinetuneData::embedded_mnist()?;
    let n = args.max_images.unwrap_or(usize::MAX).min(data.train.len());
    let train = ImageDataset {
        images: data.train.images[..n].to_vec(),
        labels: data.train.labels[..n].to_vec(),
        classes: data.train.classes.clone(),
    };
    let weights =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/mobilenet_v2_mnist_float.bpk");
    let model = qat_model(
        &FinetuneConfig::new(),
        10,
        Some(&weights),
        &devices[0].clone().autodiff(),
    )?;
    println!(
        "data-parallel QAT: {} images on {} replicas ({})",
        train.len(),
        devices.len(),
        args.devices
    );
    let config = DataParallelConfig::new()
        .with_epochs(args.epochs)
        .with_lr(args.lr)
        .with_batch_size(args.batch_size);
    let start = std::time::Instant::now();
    let model = fit_data_parallel(
        model,
        &train,
        &data.test,
        &data.transform,
        &devices,
        &config,
        &args.out,
    )?;
    println!("trained in {:.1} s", start.elapsed().as_secs_f64());
    let cpu = Device::flex();
    let mut qat = model.valid().to_device(&cpu);
    let fake_quant = accuracy(&qat, &data.test, &data.transform, false, None, &cpu)?;
    convert(&mut qat, Engine::from_backend(QuantBackend::X86)?)?;
    let int8 = accuracy(&qat, &data.test, &data.transform, true, None, &cpu)?;
    println!(
        "test accuracy: QAT fake-quant {:.2}%, int8 (x86) {:.2}%",
        fake_quant * 100.0,
        int8 * 100.0
    );
    Ok(())
}
