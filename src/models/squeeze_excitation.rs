//! MobileNetV3's squeeze-excitation block, as torchvision's quantizable
//! `torchvision.models.quantization.mobilenetv3.QuantizableSqueezeExcitation` (torchvision
//! 0.20.1, on `torchvision.ops.SqueezeExcitation` with `scale_activation = nn.Hardsigmoid`).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;

use super::mobilenet_v2::make_divisible;
use crate::nn::{
    Activation, AdaptiveAvgPool2d, Batch, ConvBnAct, ConvBnActConfig, FloatFunctional, Hardsigmoid,
};

/// The configuration of a [`SqueezeExcitation`] (`SqueezeExcitation(input_channels,
/// squeeze_channels)`).
#[derive(Config, Debug)]
pub struct SqueezeExcitationConfig {
    /// Channels of the input (and of the gate).
    pub input_channels: usize,
    /// Channels of the squeeze (`fc1`'s output).
    pub squeeze_channels: usize,
}

impl SqueezeExcitationConfig {
    /// MobileNetV3's SE for `channels` expanded channels: `_make_divisible(channels // 4, 8)`
    /// squeeze channels.
    pub fn mobilenet_v3(channels: usize) -> Self {
        Self::new(channels, make_divisible((channels / 4) as f64, 8, None))
    }

    /// Weights of the block (`fc1` and `fc2` with their biases), `None` on overflow.
    pub fn parameter_count(&self) -> Option<u64> {
        let (c, s) = (self.input_channels as u64, self.squeeze_channels as u64);
        let fc = c.checked_mul(s)?;
        fc.checked_mul(2)?.checked_add(c)?.checked_add(s)
    }

    /// Builds the block with torchvision's initialisation (Kaiming-normal fan-out 1×1
    /// convolutions, zero biases).
    pub fn init(&self, device: &Device) -> SqueezeExcitation {
        let fc = |i, o, activation| {
            ConvBnActConfig::new(i, o)
                .with_kernel_size(1)
                .with_batch_norm(false)
                .with_bias(true)
                .with_activation(activation)
                .init(device)
        };
        SqueezeExcitation {
            avgpool: AdaptiveAvgPool2d::new(),
            fc1: fc(self.input_channels, self.squeeze_channels, Activation::Relu),
            fc2: fc(
                self.squeeze_channels,
                self.input_channels,
                Activation::Identity,
            ),
            scale_activation: Hardsigmoid::new(),
            skip_mul: FloatFunctional::new(),
        }
    }
}

/// Squeeze-excitation: `y = skip_mul.mul(hardsigmoid(fc2(relu(fc1(avgpool(x))))), x)`,
/// `[N, C, H, W]` → `[N, C, H, W]`, the `[N, C, 1, 1]` gate broadcast over the map.
///
/// `fc1` is torchvision's `fc1` and `activation` (one [`ConvBnAct`] with ReLU, fused by
/// `fuse_model` as torchvision's `_fuse_modules(self, ["fc1", "activation"])`), `fc2` a
/// plain 1×1 convolution with bias. In QAT the hardsigmoid's output is fake-quantized with
/// fixed qparams (1/256, 0), and after convert the mul is `QFunctional.mul` (the gate first,
/// as torchvision's `skip_mul.mul(self._scale(input), input)`).
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    /// Global average pooling to `[N, C, 1, 1]`.
    pub avgpool: AdaptiveAvgPool2d,
    /// 1×1 conv with bias to the squeeze channels, then ReLU.
    pub fc1: ConvBnAct,
    /// 1×1 conv with bias back to the input channels.
    pub fc2: ConvBnAct,
    /// The gate's hardsigmoid.
    pub scale_activation: Hardsigmoid,
    /// The gate times the input (quantizable).
    pub skip_mul: FloatFunctional,
}

/// torchvision's `QuantizableSqueezeExcitation`: every [`SqueezeExcitation`] here is
/// quantizable.
pub type QuantizableSqueezeExcitation = SqueezeExcitation;

impl SqueezeExcitation {
    /// The gated input on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        let scale = self
            .fc2
            .forward(self.fc1.forward(self.avgpool.forward(x.clone())));
        self.skip_mul.mul(self.scale_activation.forward(scale), x)
    }
}

crate::impl_quantizable!(SqueezeExcitation {
    avgpool,
    fc1,
    fc2,
    scale_activation,
    skip_mul
});
