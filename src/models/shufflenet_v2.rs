//! ShuffleNetV2 (Ma et al., 2018), layer for layer as torchvision's quantizable
//! `torchvision.models.quantization.shufflenetv2.QuantizableShuffleNetV2` (torchvision 0.20.1):
//! quant/dequant stubs at the edges, [`ShuffleInvertedResidual`] blocks (channel split, a
//! `FloatFunctional` cat, channel shuffle), [`ShuffleNetV2::fuse_model`]. Float and quantizable
//! are one type, as MobileNetV2's and ResNet's; torchvision checkpoints load through
//! [`crate::models::torchvision`].

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::shufflenet_v2_block::{
    ShuffleInvertedResidual, ShuffleInvertedResidualConfig, pytorch_default_init,
};
use crate::nn::{
    Activation, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, ImageBatch, ImageClassifier,
    LinearBnAct, LinearBnActConfig, MaxPool2d, MaxPool2dConfig, QuantStub,
};
use crate::{Error, Result};

/// torchvision's `QuantizableShuffleNetV2`: every [`ShuffleNetV2`] here is quantizable.
pub type QuantizableShuffleNetV2 = ShuffleNetV2;

/// Configuration of [`ShuffleNetV2`] (torchvision's `ShuffleNetV2.__init__` arguments).
#[derive(Config, Debug)]
pub struct ShuffleNetV2Config {
    /// Blocks in stages 2, 3 and 4 (torchvision's `stages_repeats`), each at least 1.
    pub stages_repeats: [usize; 3],
    /// Output channels of `conv1`, stages 2–4 and `conv5` (`stages_out_channels`); the
    /// stages' must be even (two branches of half each).
    pub stages_out_channels: [usize; 5],
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
}

impl ShuffleNetV2Config {
    /// torchvision's `shufflenet_v2_x0_5`: `[4, 8, 4]`, `[24, 48, 96, 192, 1024]`.
    pub fn x0_5() -> Self {
        Self::new([4, 8, 4], [24, 48, 96, 192, 1024])
    }

    /// torchvision's `shufflenet_v2_x1_0`: `[4, 8, 4]`, `[24, 116, 232, 464, 1024]`.
    pub fn x1_0() -> Self {
        Self::new([4, 8, 4], [24, 116, 232, 464, 1024])
    }

    /// torchvision's `shufflenet_v2_x1_5`: `[4, 8, 4]`, `[24, 176, 352, 704, 1024]`.
    pub fn x1_5() -> Self {
        Self::new([4, 8, 4], [24, 176, 352, 704, 1024])
    }

    /// torchvision's `shufflenet_v2_x2_0`: `[4, 8, 4]`, `[24, 244, 488, 976, 2048]`.
    pub fn x2_0() -> Self {
        Self::new([4, 8, 4], [24, 244, 488, 976, 2048])
    }

    /// Checks the configuration (every block's as torchvision does, and the model's size);
    /// [`init`](Self::init) calls it.
    pub fn validate(&self) -> Result<()> {
        let [c1, s2, s3, s4, c5] = self.stages_out_channels;
        if self.num_classes == 0 || self.stages_repeats.contains(&0) || c1 == 0 || c5 == 0 {
            return Err(Error::Config(format!(
                "ShuffleNetV2 needs positive num_classes, stages_repeats and channels, got \
                 num_classes {}, stages_repeats {:?}, stages_out_channels {:?}",
                self.num_classes, self.stages_repeats, self.stages_out_channels
            )));
        }
        if [s2, s3, s4].iter().any(|&c| c == 0 || c % 2 == 1) {
            return Err(Error::Config(format!(
                "ShuffleNetV2's stage channels must be positive and even (two branches of half \
                 each), got stages_out_channels {:?}",
                self.stages_out_channels
            )));
        }
        self.check_model_size()?;
        self.block_configs()
            .iter()
            .flatten()
            .try_for_each(ShuffleInvertedResidualConfig::validate)
    }

    /// The configuration of every block of stages 2–4: a stride-2 block, then
    /// `repeats − 1` stride-1 blocks.
    pub fn block_configs(&self) -> [Vec<ShuffleInvertedResidualConfig>; 3] {
        let mut inp = self.stages_out_channels[0];
        std::array::from_fn(|stage| {
            let out = self.stages_out_channels[stage + 1];
            (0..self.stages_repeats[stage])
                .map(|i| {
                    let stride = if i == 0 { 2 } else { 1 };
                    let block = ShuffleInvertedResidualConfig::new(inp, out, stride);
                    inp = out;
                    block
                })
                .collect()
        })
    }

    /// Builds the model with torchvision's initialisation, which is PyTorch's default
    /// (`kaiming_uniform_(a=√5)` convolutions and classifier, unit BN scale).
    pub fn init(&self, device: &Device) -> Result<ShuffleNetV2> {
        self.validate()?;
        let [stage2, stage3, stage4] = self.block_configs().map(|stage| {
            stage
                .iter()
                .map(|c| c.init(device))
                .collect::<Result<Vec<_>>>()
        });
        let [c1, .., c4, c5] = self.stages_out_channels;
        let conv = |i, o, k: usize, s| {
            ConvBnActConfig::new(i, o)
                .with_kernel_size(k)
                .with_stride(s)
                .with_activation(Activation::Relu)
                .with_initializer(Some(pytorch_default_init()))
                .init(device)
        };
        Ok(ShuffleNetV2 {
            quant: QuantStub::new(),
            conv1: conv(3, c1, 3, 2),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .init()?,
            stage2: stage2?,
            stage3: stage3?,
            stage4: stage4?,
            conv5: conv(c4, c5, 1, 1),
            fc: LinearBnActConfig::new(c5, self.num_classes)
                .with_initializer(pytorch_default_init())
                .init(device),
            dequant: DeQuantStub::new(),
        })
    }
}

/// ShuffleNetV2: `dequant(fc(mean(conv5(stage4(stage3(stage2(maxpool(conv1(quant(x))))))),
/// [2, 3])))`, `[N, 3, H, W]` → `[N, num_classes]`. `conv1` is 3×3/2 + BN + ReLU, `maxpool`
/// 3×3/2 with padding 1, each stage opens with a stride-2 block, `conv5` is 1×1 + BN + ReLU;
/// the global pooling is `x.mean([2, 3])` ([`ImageBatch::spatial_mean`]).
#[derive(Module, Debug)]
pub struct ShuffleNetV2 {
    /// Input quantization point (identity in float mode).
    pub quant: QuantStub,
    /// 3×3 stride-2 conv + BN + ReLU from RGB.
    pub conv1: ConvBnAct,
    /// 3×3 stride-2 max pooling.
    pub maxpool: MaxPool2d,
    /// Stage 2.
    pub stage2: Vec<ShuffleInvertedResidual>,
    /// Stage 3.
    pub stage3: Vec<ShuffleInvertedResidual>,
    /// Stage 4.
    pub stage4: Vec<ShuffleInvertedResidual>,
    /// 1×1 conv + BN + ReLU to the classifier's width.
    pub conv5: ConvBnAct,
    /// The final linear layer.
    pub fc: LinearBnAct,
    /// Output dequantization point.
    pub dequant: DeQuantStub,
}

crate::impl_quantizable!(ShuffleNetV2 {
    quant,
    conv1,
    maxpool,
    stage2,
    stage3,
    stage4,
    conv5,
    fc,
    dequant
});

impl ImageClassifier for ShuffleNetV2 {
    const NAME: &'static str = "shufflenet_v2";

    /// The one forward of every stage, generic over what flows between the layers.
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let pooled = self.features(x).spatial_mean();
        self.dequant.forward(self.fc.forward(pooled))
    }

    fn check_input_shape(&self, shape: &[usize]) -> Result<()> {
        ShuffleNetV2::check_input_shape(shape)
    }
}

impl ShuffleNetV2 {
    /// Everything before the global pooling, `[N, conv5 channels, H/32, W/32]` (rounded up),
    /// without the quant stub.
    pub fn features<X: ImageBatch>(&self, x: X) -> X {
        let x = self.maxpool.forward(self.conv1.forward(x));
        let x = [&self.stage2, &self.stage3, &self.stage4]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x));
        self.conv5.forward(x)
    }

    /// Checks that `shape` is a batch this model takes: `[N ≥ 1, 3, H ≥ 1, W ≥ 1]`
    /// (torchvision's `min_size` for ShuffleNetV2 is 1×1).
    pub fn check_input_shape(shape: &[usize]) -> Result<()> {
        super::check_image_batch_of("ShuffleNetV2", shape, 1)
    }

    /// Number of classes the classifier predicts.
    pub fn num_classes(&self) -> usize {
        self.fc.out_features()
    }

    /// torchvision's `QuantizableShuffleNetV2.fuse_model(is_qat)`: `conv1` and `conv5`
    /// `[["0", "1", "2"]]`, every block's `branch1` `[["0", "1"], ["2", "3", "4"]]` and
    /// `branch2` `[["0", "1", "2"], ["3", "4"], ["5", "6", "7"]]` — here each conv + BN
    /// (+ ReLU) is one [`ConvBnAct`]. `Some(true)` fuses for QAT (BN kept and trained),
    /// `Some(false)` for inference (BN folded; eval mode), `None` follows the model's mode.
    pub fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        let is_qat = is_qat.unwrap_or_else(|| self.is_training());
        crate::fuse::fuse_model(self, is_qat)
    }

    /// Whether the model trains (PyTorch's `model.training`).
    pub fn is_training(&self) -> bool {
        self.conv1.bn.is_some() && self.conv1.is_training()
    }
}
