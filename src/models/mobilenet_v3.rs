//! MobileNetV3 (Howard et al., 2019), large and small, layer for layer as torchvision's
//! quantizable `torchvision.models.quantization.mobilenetv3.QuantizableMobileNetV3`
//! (torchvision 0.20.1, on `torchvision.models.mobilenetv3.MobileNetV3`): quant/dequant stubs
//! at the edges, [`MobileNetV3Block`]s with squeeze-excitation, hardswish activations,
//! [`MobileNetV3::fuse_model`]. Float and quantizable are one type, as MobileNetV2's;
//! torchvision checkpoints load through [`crate::models::torchvision`].

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use super::footprint::{Activations, check_forward, check_weights};
use super::mobilenet_v3_block::MobileNetV3Block;
use super::mobilenet_v3_block::{
    ConvNormActivation, ConvNormActivationConfig, MobileNetV3BlockConfig, V3Activation,
    adjust_channels,
};
use crate::limits::product;
use crate::nn::{
    Batch, DeQuantStub, Hardswish, ImageBatch, ImageClassifier, LinearBnAct, LinearBnActConfig,
    QuantStub,
};
use crate::{Error, Result};

/// torchvision's `QuantizableMobileNetV3`: every [`MobileNetV3`] here is quantizable.
pub type QuantizableMobileNetV3 = MobileNetV3;

/// Which of torchvision's two tables (`_mobilenet_v3_conf(arch)`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MobileNetV3Arch {
    /// `mobilenet_v3_large`: 15 blocks, last channel 1280.
    Large,
    /// `mobilenet_v3_small`: 11 blocks, last channel 1024.
    Small,
}

/// Configuration of [`MobileNetV3`]: `_mobilenet_v3_conf(arch, width_mult, reduced_tail,
/// dilated)` and `MobileNetV3(num_classes, dropout)`.
#[derive(Config, Debug)]
pub struct MobileNetV3Config {
    /// Large or small.
    pub arch: MobileNetV3Arch,
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width multiplier of every channel count (`adjust_channels`).
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Halves the channels of the last stage and the classifier (`reduced_tail`).
    #[config(default = false)]
    pub reduced_tail: bool,
    /// torchvision's `dilated` (dilation 2 in the last stage); refused by
    /// [`validate`](Self::validate): this crate's int8 convolutions have no dilation.
    #[config(default = false)]
    pub dilated: bool,
    /// Dropout probability in the classifier.
    #[config(default = 0.2)]
    pub dropout: f64,
}

impl MobileNetV3Config {
    /// torchvision's `mobilenet_v3_large`.
    pub fn large() -> Self {
        Self::new(MobileNetV3Arch::Large)
    }

    /// torchvision's `mobilenet_v3_small`.
    pub fn small() -> Self {
        Self::new(MobileNetV3Arch::Small)
    }

    /// The blocks (torchvision's `inverted_residual_setting`) with the width multiplier applied.
    pub fn block_configs(&self) -> Vec<MobileNetV3BlockConfig> {
        use V3Activation::{Hardswish as HS, Relu as RE};
        let r = if self.reduced_tail { 2 } else { 1 };
        let rows: &[(usize, usize, usize, usize, bool, V3Activation, usize)] = match self.arch {
            MobileNetV3Arch::Large => &[
                (16, 3, 16, 16, false, RE, 1),
                (16, 3, 64, 24, false, RE, 2),
                (24, 3, 72, 24, false, RE, 1),
                (24, 5, 72, 40, true, RE, 2),
                (40, 5, 120, 40, true, RE, 1),
                (40, 5, 120, 40, true, RE, 1),
                (40, 3, 240, 80, false, HS, 2),
                (80, 3, 200, 80, false, HS, 1),
                (80, 3, 184, 80, false, HS, 1),
                (80, 3, 184, 80, false, HS, 1),
                (80, 3, 480, 112, true, HS, 1),
                (112, 3, 672, 112, true, HS, 1),
                (112, 5, 672, 160 / r, true, HS, 2),
                (160 / r, 5, 960 / r, 160 / r, true, HS, 1),
                (160 / r, 5, 960 / r, 160 / r, true, HS, 1),
            ],
            MobileNetV3Arch::Small => &[
                (16, 3, 16, 16, true, RE, 2),
                (16, 3, 72, 24, false, RE, 2),
                (24, 3, 88, 24, false, RE, 1),
                (24, 5, 96, 40, true, HS, 2),
                (40, 5, 240, 40, true, HS, 1),
                (40, 5, 240, 40, true, HS, 1),
                (40, 5, 120, 48, true, HS, 1),
                (48, 5, 144, 48, true, HS, 1),
                (48, 5, 288, 96 / r, true, HS, 2),
                (96 / r, 5, 576 / r, 96 / r, true, HS, 1),
                (96 / r, 5, 576 / r, 96 / r, true, HS, 1),
            ],
        };
        rows.iter()
            .map(|&(i, k, e, o, se, act, s)| {
                MobileNetV3BlockConfig::adjusted(i, k, e, o, se, act, s, self.width_mult)
            })
            .collect()
    }

    /// Channels of the stem (the first block's input).
    pub fn stem_channels(&self) -> usize {
        adjust_channels(16, self.width_mult)
    }

    /// Channels of the last convolution, `6 ×` the last block's output.
    pub fn lastconv_channels(&self) -> usize {
        let last = self.block_configs().last().map_or(0, |b| b.out_channels);
        last.saturating_mul(6)
    }

    /// The classifier's hidden width (torchvision's `last_channel`:
    /// `adjust_channels(1280 // r)` large, `adjust_channels(1024 // r)` small).
    pub fn last_channel(&self) -> usize {
        let r = if self.reduced_tail { 2 } else { 1 };
        let base = match self.arch {
            MobileNetV3Arch::Large => 1280,
            MobileNetV3Arch::Small => 1024,
        };
        adjust_channels(base / r, self.width_mult)
    }

    /// Checks the configuration and that the model's weights fit in memory (sizes counted in
    /// u64 before anything is allocated); [`init`](Self::init) calls it.
    pub fn validate(&self) -> Result<()> {
        super::check_width_and_dropout(self.width_mult, self.dropout)?;
        if self.num_classes == 0 {
            return Err(Error::Config("num_classes must be at least 1".into()));
        }
        if self.dilated {
            return Err(Error::Config(
                "dilated MobileNetV3 is not supported: int8 convolutions have no dilation".into(),
            ));
        }
        self.check_model_size()?;
        self.block_configs()
            .iter()
            .try_for_each(MobileNetV3BlockConfig::validate)
    }

    /// Errors if the weights (4 bytes each) would not fit in memory, as
    /// [`parameter_count`](Self::parameter_count) counts them.
    pub fn check_model_size(&self) -> Result<()> {
        check_weights(self.parameter_count()).map_err(|why| {
            Error::Config(format!(
                "MobileNetV3 {:?} of width {} and {} classes is too large: {why}",
                self.arch, self.width_mult, self.num_classes
            ))
        })
    }

    /// The activations of one forward pass on a `[batch, 3, height, width]` input (stem, each
    /// block's expansion, depthwise and projection outputs, the head), `None` if a count
    /// overflows.
    pub fn activations(&self, batch: u64, height: u64, width: u64) -> Option<Activations> {
        let mut acts = Activations::new();
        acts.add(batch, 3, height, width)?;
        let (mut h, mut w) = (height.div_ceil(2), width.div_ceil(2));
        acts.add(batch, self.stem_channels() as u64, h, w)?;
        for block in self.block_configs() {
            let expanded = block.expanded_channels as u64;
            acts.add(batch, expanded, h, w)?;
            if block.stride == 2 {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
            }
            acts.add(batch, expanded, h, w)?;
            acts.add(batch, block.out_channels as u64, h, w)?;
        }
        acts.add(batch, self.lastconv_channels() as u64, h, w)?;
        Some(acts)
    }

    /// Checks that a forward pass on `[batch, 3, height, width]` fits in memory with the
    /// model's weights: `training` counts every activation (kept for the backward pass),
    /// inference the widest layer's. The error names the sizes.
    pub fn check_forward_size(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        training: bool,
    ) -> Result<()> {
        let acts = self.activations(batch as u64, height as u64, width as u64);
        let model = format!(
            "MobileNetV3 {:?} (width_mult {})",
            self.arch, self.width_mult
        );
        let size = (batch, height, width);
        check_forward(acts, self.parameter_count(), training, size, &model)
    }

    /// Number of weights (convolutions and biases, batch norms' four vectors, classifier) as
    /// torchvision's `state_dict()` holds them without `num_batches_tracked`, `None` on
    /// overflow.
    pub fn parameter_count(&self) -> Option<u64> {
        let mut total = self.stem().parameter_count()?;
        for block in self.block_configs() {
            total = total.checked_add(block.parameter_count()?)?;
        }
        total = total.checked_add(self.head()?.parameter_count()?)?;
        let (l, h, n) = (
            self.lastconv_channels() as u64,
            self.last_channel() as u64,
            self.num_classes as u64,
        );
        let hidden = product([l.checked_add(1)?, h])?;
        let out = product([h.checked_add(1)?, n])?;
        total.checked_add(hidden)?.checked_add(out)
    }

    fn stem(&self) -> ConvNormActivationConfig {
        ConvNormActivationConfig::new(3, self.stem_channels(), 3)
            .with_stride(2)
            .with_activation(Some(V3Activation::Hardswish))
    }

    fn head(&self) -> Option<ConvNormActivationConfig> {
        let last = self.block_configs().last()?.out_channels;
        Some(
            ConvNormActivationConfig::new(last, self.lastconv_channels(), 1)
                .with_activation(Some(V3Activation::Hardswish)),
        )
    }

    /// Builds the model with torchvision's initialisation (Kaiming-normal fan-out
    /// convolutions, unit BN scale, `Normal(0, 0.01)` linear weights, zero biases).
    pub fn init(&self, device: &Device) -> Result<MobileNetV3> {
        self.validate()?;
        let blocks = self
            .block_configs()
            .iter()
            .map(|c| c.init(device))
            .collect::<Result<Vec<_>>>()?;
        let head = self
            .head()
            .ok_or_else(|| Error::Config("MobileNetV3 needs at least one block".into()))?;
        Ok(MobileNetV3 {
            quant: QuantStub::new(),
            stem: self.stem().init(device),
            blocks,
            head: head.init(device),
            hidden: LinearBnActConfig::new(self.lastconv_channels(), self.last_channel())
                .init(device),
            hardswish: Hardswish::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearBnActConfig::new(self.last_channel(), self.num_classes).init(device),
            dequant: DeQuantStub::new(),
        })
    }
}

/// MobileNetV3: `dequant(classifier(dropout(hardswish(hidden(flatten(avgpool(features(
/// quant(x)))))))))`, `[N, 3, H, W]` → `[N, num_classes]`. torchvision's `features` Sequential
/// is split into `stem` (`features.0`: 3×3/2 conv, BN, hardswish), `blocks`
/// (`features.1..=n`) and `head` (`features.n+1`: 1×1 conv, BN, hardswish); its `classifier`
/// Sequential into `hidden` (`classifier.0`), `hardswish` (`.1`), `dropout` (`.2`) and
/// `classifier` (`.3`).
#[derive(Module, Debug)]
pub struct MobileNetV3 {
    /// Input quantization point (identity in float mode).
    pub quant: QuantStub,
    /// 3×3 stride-2 convolution from RGB, BN, hardswish.
    pub stem: ConvNormActivation,
    /// The inverted residual blocks.
    pub blocks: Vec<MobileNetV3Block>,
    /// 1×1 convolution to `6 ×` the last block's channels, BN, hardswish.
    pub head: ConvNormActivation,
    /// The classifier's hidden linear layer (to `last_channel`).
    pub hidden: LinearBnAct,
    /// The classifier's hardswish.
    pub hardswish: Hardswish,
    /// Dropout before the last linear layer.
    pub dropout: Dropout,
    /// The final linear layer.
    pub classifier: LinearBnAct,
    /// Output dequantization point.
    pub dequant: DeQuantStub,
}

crate::impl_quantizable!(MobileNetV3 {
    quant,
    stem,
    blocks,
    head,
    hidden,
    hardswish,
    classifier,
    dequant
});

impl ImageClassifier for MobileNetV3 {
    const NAME: &'static str = "mobilenet_v3";

    /// The one forward of every stage, generic over what flows between the layers.
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let pooled = self.features(x).global_avg_pool_flatten();
        let hidden = self.hardswish.forward(self.hidden.forward(pooled));
        let logits = self.classifier.forward(hidden.dropout(&self.dropout));
        self.dequant.forward(logits)
    }

    fn check_input_shape(&self, shape: &[usize]) -> Result<()> {
        MobileNetV3::check_input_shape(shape)
    }
}

impl MobileNetV3 {
    /// The feature extractor (torchvision's `model.features`), `[N, 6·C_last, H/32, W/32]`,
    /// without the quant stub.
    pub fn features<X: ImageBatch>(&self, x: X) -> X {
        let x = self.stem.forward(x);
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        self.head.forward(x)
    }

    /// Checks that `shape` is a batch this model takes (`[N ≥ 1, 3, H ≥ 32, W ≥ 32]`).
    pub fn check_input_shape(shape: &[usize]) -> Result<()> {
        super::check_image_batch("MobileNetV3", shape)
    }

    /// Number of classes the classifier predicts.
    pub fn num_classes(&self) -> usize {
        self.classifier.out_features()
    }

    /// torchvision's `QuantizableMobileNetV3.fuse_model(is_qat)`: every conv + BN (+ ReLU),
    /// and each squeeze-excitation's `fc1` + ReLU; hardswish stays its own module.
    /// `Some(true)` fuses for QAT (BN kept and trained), `Some(false)` for inference (BN
    /// folded; eval mode), `None` follows the model's mode.
    pub fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        let is_qat = is_qat.unwrap_or_else(|| self.is_training());
        crate::fuse::fuse_model(self, is_qat)
    }

    /// Whether the model trains (PyTorch's `model.training`).
    pub fn is_training(&self) -> bool {
        self.stem.conv.bn.is_some() && self.stem.conv.is_training()
    }
}
