//! ShuffleNetV2's building block, as torchvision's quantizable `QuantizableInvertedResidual`
//! (`torchvision.models.quantization.shufflenetv2`, torchvision 0.20.1, on
//! `torchvision.models.shufflenetv2.InvertedResidual`): two branches joined by a
//! [`FloatFunctional`] `cat` (one quantized cat, requantizing to its own qparams, after
//! convert), then `channel_shuffle(out, 2)`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::tensor::Device;

use crate::nn::{Activation, ConvBnAct, ConvBnActConfig, FloatFunctional, ImageBatch};
use crate::{Error, Result};

/// The configuration of one [`ShuffleInvertedResidual`] (torchvision's `inp`, `oup`, `stride`).
#[derive(Config, Debug)]
pub struct ShuffleInvertedResidualConfig {
    /// Input channels (`inp`).
    pub in_channels: usize,
    /// Output channels (`oup`); each branch gives half of them.
    pub out_channels: usize,
    /// Stride of the depthwise convolutions, 1 to 3.
    pub stride: usize,
}

impl ShuffleInvertedResidualConfig {
    /// Channels of each branch, `oup / 2` (torchvision's `branch_features`).
    pub fn branch_features(&self) -> usize {
        self.out_channels / 2
    }

    /// What torchvision checks (stride in 1..=3; with stride 1 the input splits into two
    /// halves of `branch_features`), and that every size is positive.
    pub fn validate(&self) -> Result<()> {
        if !(1..=3).contains(&self.stride) {
            return Err(Error::Config(format!(
                "illegal stride value {} (ShuffleNetV2 blocks take 1 to 3)",
                self.stride
            )));
        }
        let features = self.branch_features();
        if self.in_channels == 0 || features == 0 {
            return Err(Error::Config(format!(
                "a ShuffleNetV2 block needs positive channels, got inp {} and oup {}",
                self.in_channels, self.out_channels
            )));
        }
        if self.stride == 1 && self.in_channels != features << 1 {
            return Err(Error::Config(format!(
                "Invalid combination of stride {}, inp {} and oup {} values. If stride == 1 then \
                 inp should be equal to oup // 2 << 1.",
                self.stride, self.in_channels, self.out_channels
            )));
        }
        Ok(())
    }

    /// Builds the block with PyTorch's default initialisation, as torchvision's ShuffleNetV2
    /// (`kaiming_uniform_(a=√5)` convolutions, unit BN scale).
    pub fn init(&self, device: &Device) -> Result<ShuffleInvertedResidual> {
        self.validate()?;
        let (inp, features, stride) = (self.in_channels, self.branch_features(), self.stride);
        let conv = |i, o, k: usize, act| {
            ConvBnActConfig::new(i, o)
                .with_kernel_size(k)
                .with_activation(act)
                .with_initializer(Some(pytorch_default_init()))
        };
        let depthwise = |c| {
            conv(c, c, 3, Activation::Identity)
                .with_stride(stride)
                .with_groups(c)
        };
        let pointwise = |i, o| conv(i, o, 1, Activation::Relu);
        let branch1 = match stride {
            1 => vec![],
            _ => vec![depthwise(inp), pointwise(inp, features)],
        };
        let branch2 = vec![
            pointwise(if stride > 1 { inp } else { features }, features),
            depthwise(features),
            pointwise(features, features),
        ];
        let build = |convs: Vec<ConvBnActConfig>| convs.iter().map(|c| c.init(device)).collect();
        Ok(ShuffleInvertedResidual {
            branch1: build(branch1),
            branch2: build(branch2),
            cat: FloatFunctional::new(),
        })
    }
}

/// PyTorch's default `nn.Conv2d` / `nn.Linear` weight initialisation, `kaiming_uniform_(a=√5)`:
/// `U(±1/√fan_in)`.
pub(crate) fn pytorch_default_init() -> Initializer {
    Initializer::KaimingUniform {
        gain: 1.0 / 3f64.sqrt(),
        fan_out_only: false,
    }
}

/// ShuffleNetV2's inverted residual, `[N, inp, H, W]` → `[N, 2·(oup/2), ⌈H/s⌉, ⌈W/s⌉]`:
///
/// - stride 1: `x1, x2 = x.chunk(2, dim=1)`, `out = cat([x1, branch2(x2)], dim=1)`;
/// - stride > 1: `out = cat([branch1(x), branch2(x)], dim=1)`;
///
/// then `channel_shuffle(out, 2)`. `branch1` is depthwise 3×3 (stride) + BN, then 1×1 + BN +
/// ReLU; `branch2` is 1×1 + BN + ReLU, depthwise 3×3 (stride) + BN, 1×1 + BN + ReLU. Each
/// conv, its BN and its ReLU are one [`ConvBnAct`], fused as torchvision's `fuse_model`:
/// `branch1` `[["0", "1"], ["2", "3", "4"]]`, `branch2` `[["0", "1", "2"], ["3", "4"],
/// ["5", "6", "7"]]`. `branch1` is empty with stride 1, as torchvision's empty `Sequential`.
#[derive(Module, Debug)]
pub struct ShuffleInvertedResidual {
    /// The downsampling branch (stride > 1 only).
    pub branch1: Vec<ConvBnAct>,
    /// The main branch.
    pub branch2: Vec<ConvBnAct>,
    /// The join (torchvision's `cat`).
    pub cat: FloatFunctional,
}

/// torchvision's `QuantizableInvertedResidual` of ShuffleNetV2.
pub type QuantizableInvertedResidual = ShuffleInvertedResidual;

impl ShuffleInvertedResidual {
    /// Forward pass on any image batch type (float, int8, traced for ONNX).
    pub fn forward<X: ImageBatch>(&self, x: X) -> X {
        let branch = |convs: &[ConvBnAct], x: X| convs.iter().fold(x, |x, c| c.forward(x));
        let out = match self.branch1.is_empty() {
            true => {
                let half = self.branch_features();
                let x1 = x.clone().narrow_channels(0, half);
                let x2 = x.narrow_channels(half, half);
                self.cat.cat(vec![x1, branch(&self.branch2, x2)], 1)
            }
            false => {
                let b1 = branch(&self.branch1, x.clone());
                self.cat.cat(vec![b1, branch(&self.branch2, x)], 1)
            }
        };
        out.channel_shuffle(2)
    }

    /// The stride of the depthwise convolutions.
    pub fn stride(&self) -> usize {
        self.branch2[1].conv.stride[0]
    }

    /// Channels of each branch (`oup / 2`).
    pub fn branch_features(&self) -> usize {
        self.branch2[2].out_channels()
    }

    /// Output channels, `2 · branch_features`.
    pub fn out_channels(&self) -> usize {
        2 * self.branch_features()
    }
}

crate::impl_quantizable!(ShuffleInvertedResidual {
    branch1,
    branch2,
    cat
});
