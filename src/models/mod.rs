//! Models: MobileNetV2 and ResNet / ResNeXt as torchvision builds them (float and quantizable in
//! one type), their torchvision checkpoints and, with the `download` feature, MobileNetV2's
//! pretrained weights downloaded on first use (without it, load a downloaded `.pth` with
//! [`load_mobilenet_v2`]).

pub mod arch;
pub mod footprint;
pub mod mobilenet_v2;
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub mod pretrained;
pub mod resnet;
pub mod resnet_block;
pub mod torchvision;
pub mod torchvision_model;

pub use arch::{Arch, ArchOptions, ArchVisitor, Family, Identified, identify_keys};
pub use footprint::Activations;
pub use mobilenet_v2::{
    Conv2dNormActivation, Conv2dNormActivationConfig, InvertedResidual, InvertedResidualConfig,
    InvertedResidualSetting, MobileNetV2, MobileNetV2Config, QuantizableInvertedResidual,
    QuantizableMobileNetV2, make_divisible,
};
#[cfg(feature = "download")]
pub use pretrained::{MobileNetV2Weights, mobilenet_v2, quantized_mobilenet_v2};
pub use resnet::{QuantizableResNet, ResNet, ResNetConfig};
pub use resnet_block::{
    BlockKind, QuantizableBasicBlock, QuantizableBottleneck, ResidualBlock, ResidualBlockConfig,
};
pub use torchvision::{
    load_mobilenet_v2, load_quantized_mobilenet_v2, load_quantized_resnet, load_resnet,
    mobilenet_v2_key_map, quantized_mobilenet_v2_key_map, quantized_resnet_key_map, resnet_key_map,
};
pub use torchvision_model::{TorchvisionConfig, TorchvisionModel};

/// Checks that `shape` is a batch an ImageNet-style classifier called `model` takes
/// (`[N, 3, H, W]`, `N ≥ 1`, `H, W ≥ 32`), so that callers can turn bad user input into an
/// error before running the model.
pub(crate) fn check_image_batch(model: &str, shape: &[usize]) -> crate::Result<()> {
    use crate::Error;
    match shape {
        [n, 3, h, w] if *n >= 1 && *h >= 32 && *w >= 32 => Ok(()),
        [_, 3, _, _] => Err(Error::Shape(format!(
            "{model} needs a non-empty batch of images of at least 32×32, got {shape:?}"
        ))),
        _ => Err(Error::Shape(format!(
            "{model} takes a float32 NCHW batch [N, 3, H, W], got shape {shape:?} (rank {})",
            shape.len()
        ))),
    }
}
