//! Models: MobileNetV2 and ResNet / ResNeXt as torchvision builds them (float and quantizable in
//! one type), their torchvision checkpoints and, with the `download` feature, MobileNetV2's
//! pretrained weights downloaded on first use (without it, load a downloaded `.pth` with
//! [`load_mobilenet_v2`]).

pub mod footprint;
pub mod mobilenet_v2;
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub mod pretrained;
pub mod resnet;
pub mod resnet_block;
pub mod torchvision;

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
