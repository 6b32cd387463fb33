//! ResNet (He et al., 2016) and ResNeXt (Xie et al., 2017), layer for layer as torchvision's
//! quantizable `torchvision.models.quantization.resnet.QuantizableResNet` (torchvision
//! 0.20.1): quant/dequant stubs at the edges, [`ResidualBlock`]s joined by `FloatFunctional`
//! `add_relu`, [`ResNet::fuse_model`]. Float and quantizable are one type, as MobileNetV2's;
//! torchvision checkpoints load through [`crate::models::torchvision`].

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use super::footprint::{Activations, check_forward, check_weights};
use super::resnet_block::{BlockKind, ResidualBlock, ResidualBlockConfig};
use crate::limits::product;
use crate::nn::{
    Activation, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, ImageBatch, ImageClassifier,
    LinearBnAct, LinearBnActConfig, MaxPool2d, MaxPool2dConfig, QuantStub,
};
use crate::{Error, Result};

/// torchvision's `QuantizableResNet`: every [`ResNet`] here is quantizable.
pub type QuantizableResNet = ResNet;

/// Configuration of [`ResNet`] (torchvision's `ResNet.__init__` arguments, without
/// `replace_stride_with_dilation`, `zero_init_residual` and `norm_layer`).
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// The block type (torchvision's `block`).
    pub block: BlockKind,
    /// Blocks per stage (torchvision's `layers`), each at least 1.
    pub layers: [usize; 4],
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Groups of the bottlenecks' 3×3 convolutions (ResNeXt's cardinality).
    #[config(default = 1)]
    pub groups: usize,
    /// Bottleneck channels per group at 64 planes (ResNeXt's `width_per_group`).
    #[config(default = 64)]
    pub width_per_group: usize,
    /// Channels of the stem and planes of the first stage; stage k has `width · 2^(k−1)`
    /// planes. torchvision hard-codes 64; smaller widths make small test models of the same
    /// structure.
    #[config(default = 64)]
    pub width: usize,
}

impl ResNetConfig {
    /// torchvision's `resnet18`: basic blocks, `[2, 2, 2, 2]`.
    pub fn resnet18() -> Self {
        Self::new(BlockKind::Basic, [2, 2, 2, 2])
    }

    /// torchvision's `resnet50`: bottlenecks, `[3, 4, 6, 3]`.
    pub fn resnet50() -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 6, 3])
    }

    /// torchvision's `resnext101_32x8d`: bottlenecks, `[3, 4, 23, 3]`, 32 groups of 8.
    pub fn resnext101_32x8d() -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 23, 3])
            .with_groups(32)
            .with_width_per_group(8)
    }

    /// torchvision's `resnext101_64x4d`: bottlenecks, `[3, 4, 23, 3]`, 64 groups of 4.
    pub fn resnext101_64x4d() -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 23, 3])
            .with_groups(64)
            .with_width_per_group(4)
    }

    /// Checks the configuration; [`init`](Self::init) calls it.
    pub fn validate(&self) -> Result<()> {
        if self.num_classes == 0 || self.width == 0 || self.layers.contains(&0) {
            return Err(Error::Config(format!(
                "ResNet needs positive num_classes, width and blocks per stage, got \
                 num_classes {}, width {}, layers {:?}",
                self.num_classes, self.width, self.layers
            )));
        }
        if self.groups == 0 || self.width_per_group == 0 {
            return Err(Error::Config(
                "groups and width_per_group must be at least 1".into(),
            ));
        }
        // Every size must be allocatable: count the weights in u64 before building anything.
        check_weights(self.parameter_count()).map_err(|why| {
            Error::Config(format!(
                "ResNet of width {}, {} groups of {}, layers {:?} and {} classes is too large: {why}",
                self.width, self.groups, self.width_per_group, self.layers, self.num_classes
            ))
        })
    }

    /// Number of weights (convolutions, batch norms' four vectors, classifier), `None` on
    /// overflow.
    pub fn parameter_count(&self) -> Option<u64> {
        let (w, exp) = (self.width as u64, self.block.expansion() as u64);
        let (groups, per_group) = (self.groups as u64, self.width_per_group as u64);
        let conv_bn = |i: u64, o: u64, k: u64, g: u64| {
            product([i / g, o, k * k])?.checked_add(product([4, o])?)
        };
        let mut total = conv_bn(3, w, 7, 1)?;
        let mut in_ch = w;
        for (stage, &blocks) in self.layers.iter().enumerate() {
            let planes = w.checked_mul(1 << stage)?;
            let out = planes.checked_mul(exp)?;
            for i in 0..blocks as u64 {
                let block = match self.block {
                    BlockKind::Basic => {
                        conv_bn(in_ch, planes, 3, 1)?.checked_add(conv_bn(planes, planes, 3, 1)?)?
                    }
                    BlockKind::Bottleneck => {
                        let width = product([planes, per_group])? / 64 * groups;
                        conv_bn(in_ch, width, 1, 1)?
                            .checked_add(conv_bn(width, width, 3, groups)?)?
                            .checked_add(conv_bn(width, out, 1, 1)?)?
                    }
                };
                let down = if (i == 0 && stage > 0) || in_ch != out {
                    conv_bn(in_ch, out, 1, 1)?
                } else {
                    0
                };
                total = total.checked_add(block)?.checked_add(down)?;
                in_ch = out;
            }
        }
        let fc = product([in_ch.checked_add(1)?, self.num_classes as u64])?;
        total.checked_add(fc)
    }

    /// The activations of one forward pass on a `[batch, 3, height, width]` input (every
    /// convolution's output, the stem's 7×7/2 and the 3×3/2 max pooling halving first), `None`
    /// if a count overflows.
    pub fn activations(&self, batch: u64, height: u64, width: u64) -> Option<Activations> {
        let mut acts = Activations::default();
        let mut add = |channels: u64, h: u64, w: u64| acts.add(batch, channels, h, w);
        let (w0, exp) = (self.width as u64, self.block.expansion() as u64);
        add(3, height, width)?;
        let (mut h, mut w) = (height.div_ceil(2), width.div_ceil(2));
        add(w0, h, w)?;
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
        add(w0, h, w)?;
        for (stage, &blocks) in self.layers.iter().enumerate() {
            let planes = w0.checked_mul(1 << stage)?;
            let inner = product([planes, self.width_per_group as u64])? / 64 * self.groups as u64;
            for i in 0..blocks {
                let (h_in, w_in) = (h, w);
                if i == 0 && stage > 0 {
                    (h, w) = (h.div_ceil(2), w.div_ceil(2));
                }
                match self.block {
                    BlockKind::Basic => {
                        add(planes, h, w)?;
                        add(planes, h, w)?;
                    }
                    BlockKind::Bottleneck => {
                        add(inner, h_in, w_in)?;
                        add(inner, h, w)?;
                        add(planes.checked_mul(exp)?, h, w)?;
                    }
                }
                if i == 0 {
                    add(planes.checked_mul(exp)?, h, w)?; // the downsampled identity
                }
            }
        }
        Some(acts)
    }

    /// Checks that an inference pass on `[batch, 3, height, width]` fits in memory with the
    /// weights (the widest activation, as [`MobileNetV2Config::check_forward_size`]
    /// counts); the error names the sizes.
    ///
    /// [`MobileNetV2Config::check_forward_size`]: super::MobileNetV2Config::check_forward_size
    pub fn check_forward_size(&self, batch: usize, height: usize, width: usize) -> Result<()> {
        let acts = self.activations(batch as u64, height as u64, width as u64);
        let model = format!("ResNet (width {}, layers {:?})", self.width, self.layers);
        let size = (batch, height, width);
        check_forward(acts, self.parameter_count(), false, size, &model)
    }

    /// The configuration of every block of each stage (torchvision's `_make_layer`): the first
    /// block of stages 2–4 has stride 2, and a block downsamples its identity when the stride or
    /// the channel count changes.
    pub fn block_configs(&self) -> [Vec<ResidualBlockConfig>; 4] {
        let mut in_channels = self.width;
        std::array::from_fn(|stage| {
            let planes = self.width << stage;
            (0..self.layers[stage])
                .map(|i| {
                    let config = ResidualBlockConfig::new(self.block, in_channels, planes)
                        .with_stride(if i == 0 && stage > 0 { 2 } else { 1 })
                        .with_groups(self.groups)
                        .with_base_width(self.width_per_group);
                    in_channels = config.out_channels();
                    config
                })
                .collect()
        })
    }

    /// Channels into the classifier, `8 · width · expansion`.
    pub fn last_channels(&self) -> usize {
        8 * self.width * self.block.expansion()
    }

    /// Builds the model with torchvision's initialisation (Kaiming-normal fan-out convolutions,
    /// unit BN scale, `nn.Linear`'s default uniform classifier).
    pub fn init(&self, device: &Device) -> Result<ResNet> {
        self.validate()?;
        let [l1, l2, l3, l4] = self.block_configs().map(|stage| {
            stage
                .iter()
                .map(|c| c.init(device))
                .collect::<Result<Vec<_>>>()
        });
        // nn.Linear's kaiming_uniform_(a=√5): U(±1/√fan_in).
        let fc_init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        Ok(ResNet {
            quant: QuantStub::new(),
            stem: ConvBnActConfig::new(3, self.width)
                .with_kernel_size(7)
                .with_stride(2)
                .with_activation(Activation::Relu)
                .init(device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .init()?,
            layer1: l1?,
            layer2: l2?,
            layer3: l3?,
            layer4: l4?,
            fc: LinearBnActConfig::new(self.last_channels(), self.num_classes)
                .with_initializer(fc_init)
                .init(device),
            dequant: DeQuantStub::new(),
        })
    }
}

/// ResNet / ResNeXt: `dequant(fc(flatten(avgpool(layer4(…layer1(maxpool(relu(bn1(conv1(
/// quant(x))))))))))`, `[N, 3, H, W]` → `[N, num_classes]`. torchvision's `conv1`, `bn1` and
/// `relu` are [`stem`](Self::stem) (7×7/2, padding 3); `maxpool` is 3×3/2 with padding 1;
/// stages 2–4 halve the resolution.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Input quantization point (identity in float mode).
    pub quant: QuantStub,
    /// 7×7 stride-2 conv + BN + ReLU from RGB.
    pub stem: ConvBnAct,
    /// 3×3 stride-2 max pooling.
    pub maxpool: MaxPool2d,
    /// Stage 1 (`width` planes, stride 1).
    pub layer1: Vec<ResidualBlock>,
    /// Stage 2 (`2·width` planes, stride 2).
    pub layer2: Vec<ResidualBlock>,
    /// Stage 3 (`4·width` planes, stride 2).
    pub layer3: Vec<ResidualBlock>,
    /// Stage 4 (`8·width` planes, stride 2).
    pub layer4: Vec<ResidualBlock>,
    /// The final linear layer.
    pub fc: LinearBnAct,
    /// Output dequantization point.
    pub dequant: DeQuantStub,
}

crate::impl_quantizable!(ResNet {
    quant,
    stem,
    maxpool,
    layer1,
    layer2,
    layer3,
    layer4,
    fc,
    dequant
});

impl ImageClassifier for ResNet {
    const NAME: &'static str = "resnet";

    /// The one forward of every stage, generic over what flows between the layers.
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let pooled = self.features(x).global_avg_pool_flatten();
        self.dequant.forward(self.fc.forward(pooled))
    }

    fn check_input_shape(&self, shape: &[usize]) -> Result<()> {
        ResNet::check_input_shape(shape)
    }
}

impl ResNet {
    /// Everything before the average pooling, `[N, 8·width·expansion, H/32, W/32]`, without
    /// the quant stub.
    pub fn features<X: ImageBatch>(&self, x: X) -> X {
        let x = self.maxpool.forward(self.stem.forward(x));
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x))
    }

    /// Checks that `shape` is a batch this model takes (`[N ≥ 1, 3, H ≥ 32, W ≥ 32]`).
    pub fn check_input_shape(shape: &[usize]) -> Result<()> {
        super::check_image_batch("ResNet", shape)
    }

    /// Number of classes the classifier predicts.
    pub fn num_classes(&self) -> usize {
        self.fc.out_features()
    }

    /// torchvision's `QuantizableResNet.fuse_model(is_qat)`: conv1 + bn1 + relu, and in every
    /// block conv + BN (+ ReLU) and the downsampling conv + BN. `Some(true)` fuses for QAT (BN
    /// kept and trained), `Some(false)` for inference (BN folded; eval mode), `None` follows
    /// the model's mode.
    pub fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        let is_qat = is_qat.unwrap_or_else(|| self.is_training());
        crate::fuse::fuse_model(self, is_qat)
    }

    /// Whether the model trains (PyTorch's `model.training`).
    pub fn is_training(&self) -> bool {
        self.stem.bn.is_some() && self.stem.is_training()
    }
}
