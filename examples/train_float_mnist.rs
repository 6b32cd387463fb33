//! Train a float MobileNetV2 on the embedded MNIST digits — the float starting point that QAT
//! fine-tunes: `cargo run --release --example train_float_mnist -- --epochs 8 --out model`.
//!
//! 4,000 training / 1,000 test digits (seeded split), resized to 32×32 and replicated to RGB;
//! SGD with momentum and a cosine learning rate; the test accuracy is printed every epoch and the
//! weights are saved with burn-store (`.bpk`).

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_qat::data::{EmbeddedMnist, Image, ImageDataset, Normalize, Transform, shuffled_indices};
use burn_qat::models::{MobileNetV2, MobileNetV2Config};
use burn_store::{BurnpackStore, ModuleSnapshot};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Training epochs.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Peak learning rate (cosine schedule).
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// MobileNetV2 width multiplier.
    #[arg(long, default_value_t = 0.5)]
    width_mult: f64,
    /// Where to save the weights (`.bpk` is appended).
    #[arg(long, default_value = "mobilenet_v2_mnist_float")]
    out: String,
}

const SEED: u64 = 2026;

fn batch(
    data: &ImageDataset,
    idx: &[usize],
    t: &Transform,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let images: Vec<&Image> = idx.iter().map(|&i| &data.images[i]).collect();
    let labels: Vec<i64> = idx.iter().map(|&i| data.labels[i] as i64).collect();
    let x = t.batch(&images, device).expect("same-size images");
    let y = Tensor::from_data(TensorData::new(labels, [idx.len()]), device);
    (x, y)
}

fn accuracy(model: &MobileNetV2, data: &ImageDataset, t: &Transform, device: &Device) -> f64 {
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0;
    for chunk in idx.chunks(250) {
        let (x, y) = batch(data, chunk, t, device);
        let pred = model.forward(x).argmax(1).flatten::<1>(0, 1);
        correct += pred.equal(y).int().sum().into_scalar::<i64>() as usize;
    }
    correct as f64 / data.len() as f64
}

fn main() -> burn_qat::Result<()> {
    let args = Args::parse();
    let device = Device::flex().autodiff();
    let data = EmbeddedMnist::load()?;
    let (train, test) = burn_qat::data::train_test_split(&data, 0.2, SEED);
    let t = Transform {
        resize: Some([32, 32]),
        center_crop: None,
        normalize: Normalize::MNIST,
    };
    let config = MobileNetV2Config::new()
        .with_num_classes(10)
        .with_width_mult(args.width_mult);
    let mut model = config.init(&device)?;
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let steps_per_epoch = train.len().div_ceil(args.batch_size);
    let total = (steps_per_epoch * args.epochs) as f64;
    let mut step = 0;
    for epoch in 0..args.epochs {
        let start = Instant::now();
        let order = shuffled_indices(train.len(), SEED + epoch as u64);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(args.batch_size) {
            let lr = args.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            let (x, y) = batch(&train, chunk, &t, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            step += 1;
        }
        let acc = accuracy(&model.valid(), &test, &t, &Device::flex());
        println!(
            "epoch {epoch}: loss {:.4}, test accuracy {:.2}% ({:.1} s)",
            loss_sum / steps_per_epoch as f64,
            acc * 100.0,
            start.elapsed().as_secs_f64()
        );
    }
    let mut store = BurnpackStore::from_file(&args.out).overwrite(true);
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| burn_qat::Error::Config(format!("saving {}: {e}", args.out)))?;
    println!("saved {}.bpk", args.out);
    Ok(())
}
