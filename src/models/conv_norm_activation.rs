//! `Conv2dNormActivation`: convolution, batch norm, optional ReLU6 — torchvision's
//! `torchvision.ops.misc.Conv2dNormActivation` as MobileNetV2 uses it.

use burn::config::Config;
use burn::module::Module;
use burn::nn::activation::Relu6;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::nn::{BatchNorm2d, BatchNorm2dConfig};

/// Configuration of a [`Conv2dNormActivation`] block.
#[derive(Config, Debug)]
pub struct Conv2dNormActivationConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Convolution groups (`in_channels` for a depthwise convolution).
    #[config(default = 1)]
    pub groups: usize,
    /// Whether a ReLU6 follows the batch norm.
    #[config(default = true)]
    pub activation: bool,
}

/// `y = relu6(bn(conv(x)))`, with `padding = (kernel_size - 1) / 2` and no convolution bias,
/// as torchvision's `Conv2dNormActivation(..., norm_layer=BatchNorm2d, activation_layer=ReLU6)`.
#[derive(Module, Debug)]
pub struct Conv2dNormActivation {
    /// The convolution (torchvision's index `0`).
    pub conv: Conv2d,
    /// The batch norm (torchvision's index `1`).
    pub bn: BatchNorm2d,
    /// The activation, absent for the linear bottleneck projection.
    pub activation: Option<Relu6>,
}

impl Conv2dNormActivationConfig {
    /// Builds the block with torchvision's initialisation: Kaiming-normal (fan-out) convolution
    /// weights, unit batch-norm scale and zero shift.
    pub fn init(&self, device: &Device) -> Conv2dNormActivation {
        let padding = (self.kernel_size - 1) / 2;
        let conv = Conv2dConfig::new(
            [self.in_channels, self.out_channels],
            [self.kernel_size, self.kernel_size],
        )
        .with_stride([self.stride, self.stride])
        .with_groups(self.groups)
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(false)
        .with_initializer(kaiming_normal_fan_out())
        .init(device);
        Conv2dNormActivation {
            conv,
            bn: BatchNorm2dConfig::new(self.out_channels).init(device),
            activation: self.activation.then(Relu6::new),
        }
    }
}

impl Conv2dNormActivation {
    /// Forward pass on an NCHW tensor.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.bn.forward(self.conv.forward(x));
        match &self.activation {
            Some(relu6) => relu6.forward(x),
            None => x,
        }
    }
}

/// `nn.init.kaiming_normal_(w, mode="fan_out")`, torchvision's convolution initialisation.
pub(crate) fn kaiming_normal_fan_out() -> Initializer {
    Initializer::KaimingNormal {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}
