//! Models: MobileNetV2 as torchvision builds it (float and quantizable in one type), its
//! torchvision checkpoints and, with the `download` feature, pretrained weights downloaded on
//! first use (without it, load a downloaded `.pth` with [`load_mobilenet_v2`]).

pub mod footprint;
pub mod mobilenet_v2;
#[cfg(feature = "download")]
#[cfg_attr(docsrs, doc(cfg(feature = "download")))]
pub mod pretrained;
pub mod torchvision;

pub use footprint::Activations;
pub use mobilenet_v2::{
    Conv2dNormActivation, Conv2dNormActivationConfig, InvertedResidual, InvertedResidualConfig,
    InvertedResidualSetting, MobileNetV2, MobileNetV2Config, QuantizableInvertedResidual,
    QuantizableMobileNetV2, make_divisible,
};
#[cfg(feature = "download")]
pub use pretrained::{MobileNetV2Weights, mobilenet_v2, quantized_mobilenet_v2};
pub use torchvision::{
    load_mobilenet_v2, load_quantized_mobilenet_v2, mobilenet_v2_key_map,
    quantized_mobilenet_v2_key_map,
};
