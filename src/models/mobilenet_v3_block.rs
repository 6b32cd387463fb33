//! MobileNetV3's building blocks, as torchvision's quantizable
//! `torchvision.models.quantization.mobilenetv3.QuantizableInvertedResidual` (torchvision
//! 0.20.1): [`ConvNormActivation`] (a `Conv2dNormActivation` whose activation may be
//! hardswish) and [`MobileNetV3Block`], the inverted residual with optional
//! squeeze-excitation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;

use super::mobilenet_v2::make_divisible;
use super::squeeze_excitation::{SqueezeExcitation, SqueezeExcitationConfig};
use crate::limits::product;
use crate::nn::{Activation, Batch, ConvBnAct, ConvBnActConfig, FloatFunctional, Hardswish};
use crate::{Error, Result};

/// MobileNetV3's batch norm: `nn.BatchNorm2d(eps=0.001, momentum=0.01)`.
const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.01;

/// The activation of a MobileNetV3 convolution (torchvision's `"RE"` / `"HS"`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum V3Activation {
    /// `nn.ReLU`, fused into the convolution by `fuse_model`.
    Relu,
    /// `nn.Hardswish`, its own module after the convolution + BN.
    Hardswish,
}

/// The configuration of a [`ConvNormActivation`]: a `Conv2dNormActivation(in, out,
/// kernel_size, stride, groups, norm_layer=BatchNorm2d(eps=0.001, momentum=0.01),
/// activation_layer)`.
#[derive(Config, Debug)]
pub struct ConvNormActivationConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size, padding `(kernel_size − 1) / 2`.
    pub kernel_size: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Groups (`in_channels` for a depthwise convolution).
    #[config(default = 1)]
    pub groups: usize,
    /// The activation; `None` for a linear projection.
    #[config(default = "None")]
    pub activation: Option<V3Activation>,
}

impl ConvNormActivationConfig {
    /// Weights of the conv and its batch norm (with its running statistics), `None` on
    /// overflow.
    pub fn parameter_count(&self) -> Option<u64> {
        let (i, o, k) = (
            self.in_channels as u64,
            self.out_channels as u64,
            self.kernel_size as u64,
        );
        product([i / self.groups.max(1) as u64, o, k, k])?.checked_add(product([4, o])?)
    }

    /// Builds the layer with torchvision's initialisation.
    pub fn init(&self, device: &Device) -> ConvNormActivation {
        let fused = match self.activation {
            Some(V3Activation::Relu) => Activation::Relu,
            _ => Activation::Identity,
        };
        ConvNormActivation {
            conv: ConvBnActConfig::new(self.in_channels, self.out_channels)
                .with_kernel_size(self.kernel_size)
                .with_stride(self.stride)
                .with_groups(self.groups)
                .with_bn_eps(BN_EPS)
                .with_bn_momentum(BN_MOMENTUM)
                .with_activation(fused)
                .init(device),
            hardswish: (self.activation == Some(V3Activation::Hardswish)).then(Hardswish::new),
        }
    }
}

/// torchvision's `Conv2dNormActivation` as MobileNetV3 uses it: conv → BN → ReLU (one
/// [`ConvBnAct`], `conv`; torchvision's indices 0, 1, 2), or conv → BN (`conv`, indices 0, 1)
/// then [`Hardswish`] (`hardswish`, index 2), or conv → BN alone. `fuse_model` fuses the conv
/// with its BN (and ReLU), as torchvision's `QuantizableMobileNetV3.fuse_model`; a hardswish
/// stays its own module with its own output observer.
#[derive(Module, Debug)]
pub struct ConvNormActivation {
    /// Conv + BN (+ ReLU).
    pub conv: ConvBnAct,
    /// The hardswish after it, if that is the activation.
    pub hardswish: Option<Hardswish>,
}

impl ConvNormActivation {
    /// Forward on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        let y = self.conv.forward(x);
        match &self.hardswish {
            Some(hardswish) => hardswish.forward(y),
            None => y,
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.out_channels()
    }
}

crate::impl_quantizable!(ConvNormActivation { conv, hardswish });

/// One row of MobileNetV3's tables (torchvision's `mobilenetv3.InvertedResidualConfig`, its
/// channels already adjusted by the width multiplier).
#[derive(Config, Debug, Copy, PartialEq)]
pub struct MobileNetV3BlockConfig {
    /// Input channels.
    pub input_channels: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Channels after the expansion.
    pub expanded_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Whether a squeeze-excitation follows the depthwise convolution.
    pub use_se: bool,
    /// The activation (`"RE"` or `"HS"`).
    pub activation: V3Activation,
    /// Stride of the depthwise convolution (1 or 2).
    pub stride: usize,
}

impl MobileNetV3BlockConfig {
    /// A row of torchvision's table with `width_mult` applied to its channels
    /// (`InvertedResidualConfig.adjust_channels`: `_make_divisible(c · width_mult, 8)`).
    #[allow(clippy::too_many_arguments)]
    pub fn adjusted(
        input_channels: usize,
        kernel: usize,
        expanded_channels: usize,
        out_channels: usize,
        use_se: bool,
        activation: V3Activation,
        stride: usize,
        width_mult: f64,
    ) -> Self {
        let adjust = |c: usize| adjust_channels(c, width_mult);
        Self::new(
            adjust(input_channels),
            kernel,
            adjust(expanded_channels),
            adjust(out_channels),
            use_se,
            activation,
            stride,
        )
    }

    /// Whether the input is added to the output (stride 1, same channels).
    pub fn use_res_connect(&self) -> bool {
        self.stride == 1 && self.input_channels == self.out_channels
    }

    /// Whether the block has its 1×1 expansion (expanded channels differ from the input's).
    pub fn has_expansion(&self) -> bool {
        self.expanded_channels != self.input_channels
    }

    /// The squeeze-excitation's configuration, if the block has one.
    pub fn se(&self) -> Option<SqueezeExcitationConfig> {
        self.use_se
            .then(|| SqueezeExcitationConfig::mobilenet_v3(self.expanded_channels))
    }

    /// The expansion (if any), depthwise and projection layers.
    fn layers(
        &self,
    ) -> (
        Option<ConvNormActivationConfig>,
        ConvNormActivationConfig,
        ConvNormActivationConfig,
    ) {
        let (i, e, o) = (
            self.input_channels,
            self.expanded_channels,
            self.out_channels,
        );
        let act = Some(self.activation);
        (
            self.has_expansion()
                .then(|| ConvNormActivationConfig::new(i, e, 1).with_activation(act)),
            ConvNormActivationConfig::new(e, e, self.kernel)
                .with_stride(self.stride)
                .with_groups(e)
                .with_activation(act),
            ConvNormActivationConfig::new(e, o, 1),
        )
    }

    /// Weights of the block, `None` on overflow.
    pub fn parameter_count(&self) -> Option<u64> {
        let (expand, depthwise, project) = self.layers();
        let expand = expand.map_or(Some(0), |l| l.parameter_count())?;
        let se = self.se().map_or(Some(0), |se| se.parameter_count())?;
        [depthwise.parameter_count()?, project.parameter_count()?, se]
            .into_iter()
            .try_fold(expand, u64::checked_add)
    }

    /// Checks what torchvision checks (stride 1 or 2) and that every size is positive.
    pub fn validate(&self) -> Result<()> {
        if !(1..=2).contains(&self.stride) {
            return Err(Error::Config(format!(
                "illegal stride value {} (MobileNetV3 blocks take 1 or 2)",
                self.stride
            )));
        }
        if [
            self.input_channels,
            self.expanded_channels,
            self.out_channels,
        ]
        .contains(&0)
            || self.kernel == 0
            || self.kernel.is_multiple_of(2)
        {
            return Err(Error::Config(format!(
                "a MobileNetV3 block needs positive channels and an odd kernel, got {self:?}"
            )));
        }
        Ok(())
    }

    /// Builds the block with torchvision's initialisation.
    pub fn init(&self, device: &Device) -> Result<MobileNetV3Block> {
        self.validate()?;
        let (expand, depthwise, project) = self.layers();
        Ok(MobileNetV3Block {
            expand: expand.map(|l| l.init(device)),
            depthwise: depthwise.init(device),
            se: self.se().map(|se| se.init(device)),
            project: project.init(device).conv,
            skip_add: FloatFunctional::new(),
            use_res_connect: self.use_res_connect(),
        })
    }
}

/// `InvertedResidualConfig.adjust_channels`: `_make_divisible(channels · width_mult, 8)`.
pub fn adjust_channels(channels: usize, width_mult: f64) -> usize {
    make_divisible(channels as f64 * width_mult, 8, None)
}

/// MobileNetV3's inverted residual (torchvision's `QuantizableInvertedResidual`):
/// `y = skip_add.add(x, block(x))` when the stride is 1 and the channel count is kept,
/// otherwise `block(x)`, with `block = project(se(depthwise(expand(x))))`: the 1×1 expansion
/// (absent when the expanded channels equal the input's) and the depthwise `k×k`, each with
/// BN and ReLU or hardswish, the optional [`SqueezeExcitation`], and the linear 1×1 projection
/// with BN. torchvision's `block.0`, `block.1`, … are these in order.
#[derive(Module, Debug)]
pub struct MobileNetV3Block {
    /// 1×1 expansion (torchvision's `block.0` when present).
    pub expand: Option<ConvNormActivation>,
    /// Depthwise `k×k` convolution with the stride.
    pub depthwise: ConvNormActivation,
    /// Squeeze-excitation.
    pub se: Option<SqueezeExcitation>,
    /// 1×1 linear projection with BN.
    pub project: ConvBnAct,
    /// The residual add (quantizable).
    pub skip_add: FloatFunctional,
    /// Whether the input is added to the output.
    pub use_res_connect: bool,
}

impl MobileNetV3Block {
    /// Forward on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = expand.forward(y);
        }
        y = self.depthwise.forward(y);
        if let Some(se) = &self.se {
            y = se.forward(y);
        }
        let y = self.project.forward(y);
        if self.use_res_connect {
            self.skip_add.add(x, y)
        } else {
            y
        }
    }
}

crate::impl_quantizable!(MobileNetV3Block {
    expand,
    depthwise,
    se,
    project,
    skip_add
});
