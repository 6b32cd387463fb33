//! Build MobileNetV2 and run it:
//! `cargo run --release --example build_mobilenetv2 [-- --pretrained] [--quantize]`
//!
//! torchvision's classic `quantization.mobilenet_v2(pretrained, progress, quantize)`: without
//! arguments the model is randomly initialised (torchvision's initialisation, ReLU6 replaced by
//! ReLU as the quantizable builder does); with `--pretrained` the official torchvision ImageNet
//! weights are downloaded into the cache (`$BURN_QAT_CACHE`, else `~/.cache/burn-qat`) on first
//! use, verified, and loaded; `--quantize` gives the int8 model (the official int8 weights with
//! `--pretrained`, else torchvision's `quantize_model` on the random weights).

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use burn_qat::models::{MobileNetV2Config, mobilenet_v2};
use burn_qat::nn::ImageClassifier;

fn main() {
    let pretrained = std::env::args().any(|a| a == "--pretrained");
    let quantize = std::env::args().any(|a| a == "--quantize");
    let device = Device::flex();
    let config = MobileNetV2Config::new();
    let model = match mobilenet_v2(pretrained, true, quantize, &config, &device) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "MobileNetV2 (width {}, {} classes): {} parameters",
        config.width_mult,
        config.num_classes,
        model.num_params()
    );
    let x = Tensor::<4>::random([1, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let start = std::time::Instant::now();
    let logits = match quantize {
        true => model.forward_int8(x).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1)
        }),
        false => model.forward(x),
    };
    println!(
        "logits {:?} in {:.1} ms",
        logits.dims(),
        start.elapsed().as_secs_f64() * 1e3
    );
}
