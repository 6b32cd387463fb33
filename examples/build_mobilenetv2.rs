//! Build MobileNetV2 and run it: `cargo run --release --example build_mobilenetv2 [-- --pretrained]`
//!
//! Without arguments the model is randomly initialised (torchvision's initialisation); with
//! `--pretrained` the official torchvision ImageNet weights are downloaded into the cache
//! (`$BURN_QAT_CACHE`, else `~/.cache/burn-qat`) on first use, verified, and loaded.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use burn_qat::models::{MobileNetV2Config, mobilenet_v2};

fn main() {
    let pretrained = std::env::args().any(|a| a == "--pretrained");
    let device = Device::flex();
    let config = MobileNetV2Config::new();
    let model = match mobilenet_v2(pretrained, true, &config, &device) {
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
    let logits = model.forward(x);
    println!(
        "logits {:?} in {:.1} ms",
        logits.dims(),
        start.elapsed().as_secs_f64() * 1e3
    );
}
