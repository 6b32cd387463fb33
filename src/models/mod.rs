//! Models: MobileNetV2, MobileNetV3, ResNet / ResNeXt and ShuffleNetV2 as torchvision builds
//! them (float and quantizable in one type), their torchvision checkpoints behind one trait
//! ([`TorchvisionModel`], named by [`Arch`]), torchvision's `quantize_model`, and, with the
//! `download` feature, builders shaped like torchvision's (`resnet18(weights, progress,
//! quantize)`, ...) whose pretrained weights are downloaded on first use (without it, load a
//! downloaded `.pth` with [`TorchvisionModel::load_torchvision`] or `load_torchvision_int8`).

pub mod arch;
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub mod builders;
pub mod footprint;
pub mod mobilenet_v2;
pub mod mobilenet_v3;
pub mod mobilenet_v3_block;
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub mod pretrained;
pub mod quantize_model;
pub mod resnet;
pub mod resnet_block;
pub mod shufflenet_v2;
pub mod shufflenet_v2_block;
mod shufflenet_v2_footprint;
pub mod squeeze_excitation;
pub mod torchvision;
pub mod torchvision_model;
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub mod weights;

pub use arch::{Arch, ArchOptions, ArchVisitor, Family, Identified, identify_keys};
#[cfg(feature = "download")]
pub use builders::{
    build, mobilenet_v2, quantized_mobilenet_v2, resnet18, resnet50, resnext101_32x8d,
    resnext101_64x4d,
};
#[cfg(feature = "download")]
pub use builders::{
    mobilenet_v3_large, mobilenet_v3_small, shufflenet_v2_x0_5, shufflenet_v2_x1_0,
    shufflenet_v2_x1_5, shufflenet_v2_x2_0,
};
pub use footprint::Activations;
pub use mobilenet_v2::{
    Conv2dNormActivation, Conv2dNormActivationConfig, InvertedResidual, InvertedResidualConfig,
    InvertedResidualSetting, MobileNetV2, MobileNetV2Config, QuantizableInvertedResidual,
    QuantizableMobileNetV2, make_divisible,
};
pub use mobilenet_v3::{MobileNetV3, MobileNetV3Arch, MobileNetV3Config, QuantizableMobileNetV3};
pub use mobilenet_v3_block::{
    ConvNormActivation, ConvNormActivationConfig, MobileNetV3Block, MobileNetV3BlockConfig,
    V3Activation,
};
pub use quantize_model::quantize_model;
pub use resnet::{QuantizableResNet, ResNet, ResNetConfig};
pub use resnet_block::{
    BlockKind, QuantizableBasicBlock, QuantizableBottleneck, ResidualBlock, ResidualBlockConfig,
};
pub use shufflenet_v2::{QuantizableShuffleNetV2, ShuffleNetV2, ShuffleNetV2Config};
pub use shufflenet_v2_block::{ShuffleInvertedResidual, ShuffleInvertedResidualConfig};
pub use squeeze_excitation::{
    QuantizableSqueezeExcitation, SqueezeExcitation, SqueezeExcitationConfig,
};
pub use torchvision::{is_qat_state_dict, load_any_int8_mobilenet_v3};
pub use torchvision::{
    load_mobilenet_v2, load_mobilenet_v3, load_qat_mobilenet_v3, load_quantized_mobilenet_v2,
    load_quantized_mobilenet_v3, load_quantized_resnet, load_resnet, mobilenet_v2_key_map,
    mobilenet_v3_key_map, qat_mobilenet_v3_key_map, quantized_mobilenet_v2_key_map,
    quantized_mobilenet_v3_key_map, quantized_resnet_key_map, resnet_key_map,
};
pub use torchvision::{
    load_quantized_shufflenet_v2, load_shufflenet_v2, quantized_shufflenet_v2_key_map,
    shufflenet_v2_key_map,
};
pub use torchvision_model::{TorchvisionConfig, TorchvisionModel};
#[cfg(feature = "download")]
pub use weights::{
    MobileNetV2Weights, ResNeXt101_32x8dWeights, ResNeXt101_64x4dWeights, ResNet18Weights,
    ResNet50Weights, Weights, WeightsInfo,
};
#[cfg(feature = "download")]
pub use weights::{
    MobileNetV3LargeWeights, MobileNetV3SmallWeights, ShuffleNetV2x0_5Weights,
    ShuffleNetV2x1_0Weights, ShuffleNetV2x1_5Weights, ShuffleNetV2x2_0Weights,
};

/// Checks the two MobileNets' shared options: a finite positive width multiplier
/// (torchvision's `width_mult`) and a dropout probability in `[0, 1)`.
pub(crate) fn check_width_and_dropout(width_mult: f64, dropout: f64) -> crate::Result<()> {
    use crate::Error;
    if !(width_mult.is_finite() && width_mult > 0.0) {
        return Err(Error::Config(format!(
            "width_mult must be a positive number, got {width_mult}"
        )));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(Error::Config(format!(
            "dropout must be in [0, 1), got {dropout}"
        )));
    }
    Ok(())
}

/// Checks that `shape` is a batch an ImageNet-style classifier called `model` takes
/// (`[N, 3, H, W]`, `N ≥ 1`, `H, W ≥ 32`), so that callers can turn bad user input into an
/// error before running the model.
pub(crate) fn check_image_batch(model: &str, shape: &[usize]) -> crate::Result<()> {
    check_image_batch_of(model, shape, 32)
}

/// [`check_image_batch`] with images of at least `min`×`min`.
pub(crate) fn check_image_batch_of(model: &str, shape: &[usize], min: usize) -> crate::Result<()> {
    use crate::Error;
    match shape {
        [n, 3, h, w] if *n >= 1 && *h >= min && *w >= min => Ok(()),
        [_, 3, _, _] => Err(Error::Shape(format!(
            "{model} needs a non-empty batch of images of at least {min}×{min}, got {shape:?}"
        ))),
        _ => Err(Error::Shape(format!(
            "{model} takes a float32 NCHW batch [N, 3, H, W], got shape {shape:?} (rank {})",
            shape.len()
        ))),
    }
}
