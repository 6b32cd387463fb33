//! Post-training quantization (no training): calibrate the shipped float MobileNetV2 on a few
//! batches of the embedded training digits, convert to int8, evaluate, save.
//!
//! `cargo run --release --example ptq_calibrate -- --backend qnnpack --batches 8`
//!
//! The steps are PyTorch's eager PTQ: ReLU6 → ReLU, `fuse_model(false)`, `prepare` with the
//! backend's default qconfig (histogram observers for activations), calibration batches,
//! `convert` (`burn_qat::finetune::post_training_quantize` does exactly this).

use std::path::PathBuf;

use burn::tensor::Device;
use burn_qat::finetune::{FinetuneConfig, FinetuneData, accuracy, post_training_quantize};
use burn_qat::quant::QuantBackend;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Engine to quantize for: `x86` (per-channel weights) or `qnnpack` (per-tensor).
    #[arg(long, default_value = "x86", value_parser = ["qnnpack", "x86"])]
    backend: String,
    /// Calibration batches of 64 training digits.
    #[arg(long, default_value_t = 8)]
    batches: usize,
    /// Where to save the int8 model.
    #[arg(long, default_value = "mobilenet_v2_ptq.int8.safetensors")]
    out: PathBuf,
}

fn main() -> burn_qat::Result<()> {
    let args = Args::parse();
    let backend = match args.backend.as_str() {
        "qnnpack" => QuantBackend::Qnnpack,
        _ => QuantBackend::X86,
    };
    let config = FinetuneConfig::new()
        .with_backend(backend)
        .with_calibration_batches(args.batches);
    let data = FinetuneData::embedded_mnist()?;
    let weights =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/mobilenet_v2_mnist_float.bpk");
    let model = post_training_quantize(&config, &data, Some(&weights))?;
    let cpu = Device::flex();
    let int8 = accuracy(&model, &data.test, &data.transform, true, None, &cpu)?;
    println!(
        "PTQ int8 ({backend:?}, {} calibration batches): {:.2}% on {} test digits",
        args.batches,
        int8 * 100.0,
        data.test.len()
    );
    burn_qat::io::save_int8_model(&model, &args.out, &Default::default())?;
    println!("saved {}", args.out.display());
    Ok(())
}
