//! MobileNetV2 (Sandler et al., 2018), layer for layer as torchvision's
//! `torchvision.models.mobilenetv2.MobileNetV2`, so that torchvision checkpoints load into it
//! (see [`crate::models::torchvision`]) and give the same logits — and quantizable as
//! torchvision's `models.quantization.mobilenet_v2.QuantizableMobileNetV2`: quant/dequant stubs
//! at the edges, residual adds through `FloatFunctional`, [`MobileNetV2::fuse_model`]. In float
//! mode the stubs and `skip_add` are identities with no state, so both are one type.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use crate::nn::{
    Activation, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, FloatFunctional, ImageBatch,
    ImageClassifier, LinearBnAct, LinearBnActConfig, QuantStub,
};
use crate::{Error, Result};

/// torchvision's `Conv2dNormActivation` (conv → BN → ReLU6) is this crate's [`ConvBnAct`].
pub type Conv2dNormActivation = ConvBnAct;
/// The configuration of a [`Conv2dNormActivation`].
pub type Conv2dNormActivationConfig = ConvBnActConfig;
/// torchvision's `QuantizableInvertedResidual`: every [`InvertedResidual`] here is quantizable.
pub type QuantizableInvertedResidual = InvertedResidual;
/// torchvision's `QuantizableMobileNetV2`: every [`MobileNetV2`] here is quantizable.
pub type QuantizableMobileNetV2 = MobileNetV2;

/// torchvision's `_make_divisible`: rounds `value` to the nearest multiple of `divisor`, never
/// below `min_value` (default `divisor`) and never more than 10% below `value`.
pub fn make_divisible(value: f64, divisor: usize, min_value: Option<usize>) -> usize {
    let min_value = min_value.unwrap_or(divisor);
    let divisor_f = divisor as f64;
    // Python's `int(v + divisor / 2) // divisor * divisor`, `int` truncating toward zero.
    let rounded = ((value + divisor_f / 2.0).trunc() as usize / divisor) * divisor;
    let mut new_value = min_value.max(rounded);
    if (new_value as f64) < 0.9 * value {
        // Saturating: an absurd width multiplier is refused by the size check, not here.
        new_value = new_value.saturating_add(divisor);
    }
    new_value
}

/// One row of the inverted-residual table: expansion `t`, output channels `c`, repeats `n`,
/// first stride `s` (torchvision's `inverted_residual_setting`).
#[derive(Config, Debug, Copy, PartialEq)]
pub struct InvertedResidualSetting {
    /// Expansion ratio `t`.
    pub expand_ratio: usize,
    /// Output channels `c` before the width multiplier.
    pub channels: usize,
    /// Number of blocks `n`.
    pub repeats: usize,
    /// Stride `s` of the first block.
    pub stride: usize,
}

/// The table of the MobileNetV2 paper, torchvision's default.
pub fn default_inverted_residual_setting() -> Vec<InvertedResidualSetting> {
    [
        [1, 16, 1, 1],
        [6, 24, 2, 2],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]
    .into_iter()
    .map(|[t, c, n, s]| InvertedResidualSetting::new(t, c, n, s))
    .collect()
}

/// Configuration of [`MobileNetV2`] (torchvision's `MobileNetV2.__init__` arguments).
#[derive(Config, Debug)]
pub struct MobileNetV2Config {
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width multiplier applied to every layer's channel count.
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Channel counts are rounded to a multiple of this.
    #[config(default = 8)]
    pub round_nearest: usize,
    /// Dropout probability before the classifier.
    #[config(default = 0.2)]
    pub dropout: f64,
    /// The inverted-residual table.
    #[config(default = "default_inverted_residual_setting()")]
    pub inverted_residual_setting: Vec<InvertedResidualSetting>,
}

/// The configuration of one [`InvertedResidual`] block.
#[derive(Config, Debug)]
pub struct InvertedResidualConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Stride of the depthwise convolution (1 or 2).
    pub stride: usize,
    /// Expansion ratio of the hidden layer.
    pub expand_ratio: usize,
}

/// MobileNetV2's inverted residual block (torchvision's `InvertedResidual` and
/// `QuantizableInvertedResidual`): `y = skip_add.add(x, project(depthwise(expand(x))))` when the
/// stride is 1 and the channel count is kept, otherwise `project(depthwise(expand(x)))`.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// 1×1 expansion with ReLU6 (absent when `expand_ratio == 1`); torchvision's `conv.0`.
    pub expand: Option<ConvBnAct>,
    /// 3×3 depthwise convolution with ReLU6.
    pub depthwise: ConvBnAct,
    /// 1×1 linear projection with batch norm, no activation.
    pub project: ConvBnAct,
    /// The residual add (quantizable).
    pub skip_add: FloatFunctional,
    /// Whether the input is added to the output.
    pub use_res_connect: bool,
}

impl InvertedResidualConfig {
    /// Builds the block; `stride` must be 1 or 2, as in torchvision.
    pub fn init(&self, device: &Device) -> Result<InvertedResidual> {
        if !(1..=2).contains(&self.stride) {
            return Err(Error::Config(format!(
                "inverted residual stride must be 1 or 2, got {}",
                self.stride
            )));
        }
        let hidden = self.in_channels * self.expand_ratio;
        let expand = (self.expand_ratio != 1).then(|| {
            ConvBnActConfig::new(self.in_channels, hidden)
                .with_kernel_size(1)
                .init(device)
        });
        Ok(InvertedResidual {
            expand,
            depthwise: ConvBnActConfig::new(hidden, hidden)
                .with_stride(self.stride)
                .with_groups(hidden)
                .init(device),
            project: ConvBnActConfig::new(hidden, self.out_channels)
                .with_kernel_size(1)
                .with_activation(Activation::Identity)
                .init(device),
            skip_add: FloatFunctional::new(),
            use_res_connect: self.stride == 1 && self.in_channels == self.out_channels,
        })
    }
}

impl InvertedResidual {
    /// Forward pass on an NCHW tensor.
    pub fn forward<X: ImageBatch>(&self, x: X) -> X {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = expand.forward(y);
        }
        let y = self.project.forward(self.depthwise.forward(y));
        if self.use_res_connect {
            self.skip_add.add(x, y)
        } else {
            y
        }
    }
}

crate::impl_quantizable!(InvertedResidual {
    expand,
    depthwise,
    project,
    skip_add
});

/// MobileNetV2. torchvision's `features` Sequential is split into `stem` (`features.0`),
/// `blocks` (`features.1..=n`) and `head` (`features.n+1`); `classifier.1` is `classifier`.
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    /// Input quantization point (identity in float mode).
    pub quant: QuantStub,
    /// 3×3 stride-2 convolution from RGB.
    pub stem: ConvBnAct,
    /// The inverted residual blocks.
    pub blocks: Vec<InvertedResidual>,
    /// 1×1 convolution to the last channel count.
    pub head: ConvBnAct,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// The final linear layer.
    pub classifier: LinearBnAct,
    /// Output dequantization point.
    pub dequant: DeQuantStub,
}

crate::impl_quantizable!(MobileNetV2 {
    quant,
    stem,
    blocks,
    head,
    classifier,
    dequant
});

/// The fine-tuning loop, its checkpoints and data-parallel training take any
/// [`ImageClassifier`]; MobileNetV2's inherent `forward` / `forward_int8` are the same.
impl ImageClassifier for MobileNetV2 {
    const NAME: &'static str = "mobilenet_v2";

    /// The one forward of every stage, generic over what flows between the layers (float
    /// tensors, or int8 batches after convert):
    /// `dequant(classifier(dropout(flatten(adaptive_avg_pool2d(features(quant(x)), 1)))))`.
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let pooled = self.features(x).global_avg_pool_flatten();
        let logits = self.classifier.forward(pooled.dropout(&self.dropout));
        self.dequant.forward(logits)
    }

    fn check_input_shape(&self, shape: &[usize]) -> Result<()> {
        MobileNetV2::check_input_shape(shape)
    }
}

impl MobileNetV2Config {
    /// Checks the configuration; every builder calls it.
    pub fn validate(&self) -> Result<()> {
        super::check_width_and_dropout(self.width_mult, self.dropout)?;
        if self.num_classes == 0 || self.round_nearest == 0 {
            return Err(Error::Config(
                "num_classes and round_nearest must be at least 1".into(),
            ));
        }
        if self.inverted_residual_setting.is_empty()
            || self
                .inverted_residual_setting
                .iter()
                .any(|s| s.expand_ratio == 0 || s.channels == 0 || s.repeats == 0)
        {
            return Err(Error::Config(
                "inverted_residual_setting needs rows of positive t, c, n".into(),
            ));
        }
        Ok(())
    }

    /// Channel count after the stem.
    pub fn input_channels(&self) -> usize {
        make_divisible(32.0 * self.width_mult, self.round_nearest, None)
    }

    /// Channel count of the head (the classifier's input).
    pub fn last_channels(&self) -> usize {
        make_divisible(1280.0 * self.width_mult.max(1.0), self.round_nearest, None)
    }

    /// The configuration of every inverted residual block, in order.
    pub fn block_configs(&self) -> Vec<InvertedResidualConfig> {
        let mut in_channels = self.input_channels();
        let mut blocks = Vec::new();
        for s in &self.inverted_residual_setting {
            let out = make_divisible(
                s.channels as f64 * self.width_mult,
                self.round_nearest,
                None,
            );
            for i in 0..s.repeats {
                let stride = if i == 0 { s.stride } else { 1 };
                blocks.push(InvertedResidualConfig::new(
                    in_channels,
                    out,
                    stride,
                    s.expand_ratio,
                ));
                in_channels = out;
            }
        }
        blocks
    }

    /// Builds the model with torchvision's initialisation.
    pub fn init(&self, device: &Device) -> Result<MobileNetV2> {
        self.validate()?;
        self.check_model_size()?;
        let blocks = self
            .block_configs()
            .iter()
            .map(|c| c.init(device))
            .collect::<Result<Vec<_>>>()?;
        let last_in = blocks
            .last()
            .map(|b| b.project.out_channels())
            .unwrap_or(self.input_channels());
        Ok(MobileNetV2 {
            quant: QuantStub::new(),
            stem: ConvBnActConfig::new(3, self.input_channels())
                .with_stride(2)
                .init(device),
            blocks,
            head: ConvBnActConfig::new(last_in, self.last_channels())
                .with_kernel_size(1)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearBnActConfig::new(self.last_channels(), self.num_classes).init(device),
            dequant: DeQuantStub::new(),
        })
    }
}

impl MobileNetV2 {
    /// The feature extractor (torchvision's `model.features`), `[N, last_channels, H/32, W/32]`,
    /// without the quant stub.
    pub fn features<X: ImageBatch>(&self, x: X) -> X {
        let x = self.stem.forward(x);
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        self.head.forward(x)
    }

    /// Checks that `shape` is a batch this model takes (`[N, 3, H, W]`, `N ≥ 1`, `H, W ≥ 32`)
    /// so that callers can turn bad user input into an error before running the model.
    pub fn check_input_shape(shape: &[usize]) -> Result<()> {
        super::check_image_batch("MobileNetV2", shape)
    }

    /// Number of classes the classifier predicts.
    pub fn num_classes(&self) -> usize {
        self.classifier.out_features()
    }

    /// torchvision's `QuantizableMobileNetV2.fuse_model(is_qat)`: fuses every conv + BN
    /// (+ ReLU) for QAT (`Some(true)`: BN kept and trained) or for inference (`Some(false)`:
    /// BN folded; the model must be in eval mode). `None` follows the model's mode: QAT when
    /// it is training (autodiff device, batch norms in training mode). Call
    /// [`replace_relu`](crate::quantize::replace_relu) first: ReLU6 does not fuse.
    pub fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        let is_qat = is_qat.unwrap_or_else(|| self.is_training());
        crate::fuse::fuse_model(self, is_qat)
    }

    /// Whether the model trains (PyTorch's `model.training`): on an autodiff device with its
    /// batch norms in training mode.
    pub fn is_training(&self) -> bool {
        self.stem.bn.is_some() && self.stem.is_training()
    }
}
