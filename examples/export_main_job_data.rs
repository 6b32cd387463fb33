//! Writes the main job's starting point and data for `scripts/qat_mnist_recipe.py`, which runs
//! the same QAT recipe in PyTorch: same float weights, same images, same order, so that a
//! difference between the two tables is the framework's.
//!
//! `cargo run --release --example export_main_job_data -- /tmp/main_job_data [--epochs N]`
//! writes into the directory:
//!
//! - `weights.safetensors`: the shipped float MobileNetV2 (`assets/mobilenet_v2_mnist_float.bpk`,
//!   or `--weights`) as a torchvision `QuantizableMobileNetV2(width_mult=0.5, num_classes=10)`
//!   state dict (torchvision names through `mobilenet_v2_key_map`, linear weights `[out, in]`;
//!   no `num_batches_tracked`, which Burn does not keep);
//! - `test_x.npy` `[1000, 3, 32, 32]` and `test_y.npy` `[1000]`: the test split after the
//!   evaluation transform (`FinetuneData::embedded_mnist()`), in evaluation order;
//! - `calib_x.npy` `[512, 3, 32, 32]`: the PTQ calibration batches (`post_training_quantize`:
//!   the first `calibration_batches × batch_size` of `shuffled_indices(train, seed)`, not
//!   augmented);
//! - `train_x_epoch{E}.npy` `[4000, 3, 32, 32]` and `train_y_epoch{E}.npy` `[4000]` for each
//!   epoch: the training images in `finetune::run`'s order after its seeded augmentation
//!   (batches are consecutive runs of `batch_size`);
//! - `meta.json`: the recipe (`FinetuneConfig`'s defaults) and the number of epochs written.
//!
//! Labels are float32 class indices (the crate's `.npy` writer is float32). The epoch order
//! and augmentation are `finetune::run`'s: the same `FinetuneData::epoch` stream.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::module::Module;
use burn::tensor::{DType, Device};
use burn_qat::data::{Image, shuffled_indices};
use burn_qat::finetune::{FinetuneConfig, FinetuneData};
use burn_qat::io::atomic::write_atomic_bytes;
use burn_qat::io::npy::write_f32;
use burn_qat::models::{MobileNetV2Config, mobilenet_v2_key_map};
use burn_qat::{Error, Result};
use burn_store::{BurnToPyTorchAdapter, BurnpackStore, ModuleSnapshot};
use clap::Parser;
use safetensors::tensor::{Dtype, TensorView};

#[derive(Parser)]
#[command(about = "Export the main job's float weights and data for the PyTorch recipe script")]
struct Args {
    /// Output directory (created).
    out: PathBuf,
    /// Epochs of training order to write (the main job trains 3; about 50 MB each).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    epochs: u16,
    /// Float weights (burnpack); default: the shipped MNIST model.
    #[arg(long, value_name = "FILE.bpk")]
    weights: Option<PathBuf>,
}

fn main() -> ExitCode {
    match export(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export(args: Args) -> Result<()> {
    // The recipe (its defaults); `--epochs` only says how many epochs of data to write.
    let config = FinetuneConfig::new();
    config.validate()?;
    let data = FinetuneData::embedded_mnist()?;
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let weights = args.weights.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/mobilenet_v2_mnist_float.bpk")
    });
    let classes = data.train.classes.len();
    write_weights(&weights, &config, classes, &out.join("weights.safetensors"))?;

    let norm = &data.transform;
    let test: Vec<&Image> = data.test.images.iter().collect();
    write_images(&out.join("test_x.npy"), &test, norm)?;
    write_labels(&out.join("test_y.npy"), &data.test.labels)?;

    // `post_training_quantize`: the first calibration batches of one shuffle, as they are.
    let calib: Vec<&Image> = shuffled_indices(data.train.len(), config.seed)
        .into_iter()
        .take(config.calibration_batches * config.batch_size)
        .map(|i| &data.train.images[i])
        .collect();
    write_images(&out.join("calib_x.npy"), &calib, norm)?;

    for epoch in 0..usize::from(args.epochs) {
        // `finetune::run`'s epoch: its shuffle, then one augmentation draw per image in order.
        let mut stream = data.epoch(config.seed, epoch);
        let order = stream.order.clone();
        let images = stream.augmented(&order);
        let labels: Vec<usize> = order.iter().map(|&j| data.train.labels[j]).collect();
        let refs: Vec<&Image> = images.iter().collect();
        write_images(&out.join(format!("train_x_epoch{epoch}.npy")), &refs, norm)?;
        write_labels(&out.join(format!("train_y_epoch{epoch}.npy")), &labels)?;
        println!("epoch {epoch}: {} training images", images.len());
    }

    let meta = serde_json::json!({
        "weights": weights.display().to_string(),
        "width_mult": config.width_mult,
        "num_classes": classes,
        "epochs": config.epochs,
        "exported_epochs": args.epochs,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "observer_off_epoch": config.observer_off_epoch,
        "bn_freeze_epoch": config.bn_freeze_epoch,
        "calibration_batches": config.calibration_batches,
        "seed": config.seed,
        "train": data.train.len(),
        "test": data.test.len(),
    });
    let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::Data(e.to_string()))?;
    write_atomic_bytes(&out.join("meta.json"), text.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The float model's tensors under torchvision's names, as a safetensors file.
fn write_weights(path: &Path, config: &FinetuneConfig, classes: usize, out: &Path) -> Result<()> {
    let model_config = MobileNetV2Config::new()
        .with_num_classes(classes)
        .with_width_mult(config.width_mult);
    let mut model = model_config.init(&Device::flex())?;
    let applied = model
        .load_from(&mut BurnpackStore::from_file(path))
        .map_err(|e| Error::ModelFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if !(applied.missing.is_empty() && applied.unused.is_empty() && applied.errors.is_empty()) {
        return Err(Error::mismatch("the weights do not fit MobileNetV2 width 0.5").at_path(path));
    }
    let keys = mobilenet_v2_key_map(&model_config);
    let mut tensors = Vec::new();
    // The adapter gives linear weights PyTorch's `[out, in]` layout. Only float tensors are
    // weights (the batch norms' training flags are not).
    for t in model
        .valid()
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
    {
        if t.dtype != DType::F32 {
            continue;
        }
        let (name, _, shape, _, bytes) = t
            .into_parts()
            .map_err(|e| Error::Data(format!("reading a weight: {e}")))?;
        tensors.push((keys.to_pytorch(&name), shape.to_vec(), bytes.to_vec()));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Data(format!("`{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::Data(format!("serializing the weights: {e}")))?;
    write_atomic_bytes(out, &bytes)?;
    println!("{} tensors -> {}", tensors.len(), out.display());
    Ok(())
}

/// Images after the transform, NCHW float32.
fn write_images(path: &Path, images: &[&Image], norm: &burn_qat::data::Transform) -> Result<()> {
    let [h, w] = norm.output_size(images[0]);
    let mut data = Vec::with_capacity(images.len() * 3 * h * w);
    for image in images {
        data.extend(norm.apply(image)?);
    }
    write_f32(path, &data, &[images.len(), 3, h, w])
}

fn write_labels(path: &Path, labels: &[usize]) -> Result<()> {
    let labels: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    write_f32(path, &labels, &[labels.len()])
}
