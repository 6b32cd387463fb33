//! Models: MobileNetV2 as torchvision builds it, its torchvision checkpoints and pretrained
//! weights.

pub mod conv_norm_activation;
pub mod mobilenet_v2;
pub mod pretrained;
pub mod torchvision;

pub use conv_norm_activation::{Conv2dNormActivation, Conv2dNormActivationConfig};
pub use mobilenet_v2::{
    InvertedResidual, InvertedResidualConfig, InvertedResidualSetting, MobileNetV2,
    MobileNetV2Config, make_divisible,
};
pub use pretrained::{MobileNetV2Weights, mobilenet_v2};
pub use torchvision::{load_mobilenet_v2, mobilenet_v2_key_map};
