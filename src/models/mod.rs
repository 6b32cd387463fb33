//! Models: MobileNetV2 as torchvision builds it (float and quantizable in one type), its
//! torchvision checkpoints and pretrained weights.

pub mod footprint;
pub mod mobilenet_v2;
pub mod pretrained;
pub mod torchvision;

pub use footprint::Activations;
pub use mobilenet_v2::{
    Conv2dNormActivation, Conv2dNormActivationConfig, InvertedResidual, InvertedResidualConfig,
    InvertedResidualSetting, MobileNetV2, MobileNetV2Config, QuantizableInvertedResidual,
    QuantizableMobileNetV2, make_divisible,
};
pub use pretrained::{MobileNetV2Weights, mobilenet_v2, quantized_mobilenet_v2};
pub use torchvision::{
    load_mobilenet_v2, load_quantized_mobilenet_v2, mobilenet_v2_key_map,
    quantized_mobilenet_v2_key_map,
};
