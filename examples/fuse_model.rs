//! Print MobileNetV2's module tree before and after fusion:
//! `cargo run --release --example fuse_model`.
//!
//! `fuse_model(Some(false))` folds every batch norm into its convolution (eval mode, inference);
//! `fuse_model(Some(true))` keeps them for QAT, and `prepare_qat` then adds the weight and
//! output fake-quants.

use burn::tensor::Device;
use burn_qat::models::MobileNetV2Config;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{prepare_qat, replace_relu};

fn main() -> burn_qat::Result<()> {
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10);

    let mut model = config.init(&Device::flex())?;
    println!("=== float ===\n{}", model.blocks[1]);
    replace_relu(&mut model)?;
    model.fuse_model(Some(false))?;
    println!("=== fuse_model(false): BN folded ===\n{}", model.blocks[1]);

    let device = Device::flex().autodiff();
    let mut model = config.init(&device)?;
    replace_relu(&mut model)?;
    model.fuse_model(Some(true))?;
    println!(
        "=== fuse_model(true): BN kept for QAT ===\n{}",
        model.blocks[1]
    );
    prepare_qat(
        &mut model,
        QConfig::default_qat(QuantBackend::Qnnpack),
        &device,
    )?;
    println!("=== prepare_qat(qnnpack) ===\n{}", model.blocks[1]);
    println!("(one inverted residual block shown; `{{model}}` prints the whole tree)");
    Ok(())
}
