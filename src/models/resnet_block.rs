//! ResNet's residual blocks, as torchvision's quantizable `QuantizableBasicBlock` and
//! `QuantizableBottleneck` (`torchvision.models.quantization.resnet`, torchvision 0.20.1): one
//! type, [`ResidualBlock`], whose [`BlockKind`] says which; the residual join is a
//! [`FloatFunctional`] `add_relu` (one quantized `add_relu` op after convert).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;

use crate::nn::{Activation, Batch, ConvBnAct, ConvBnActConfig, FloatFunctional};
use crate::{Error, Result};

/// Which of torchvision's blocks a [`ResidualBlock`] is.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `BasicBlock`: 3×3 → 3×3, expansion 1 (ResNet-18/34).
    Basic,
    /// `Bottleneck` (ResNet V1.5, stride on the 3×3): 1×1 → 3×3 (grouped for ResNeXt) → 1×1,
    /// expansion 4 (ResNet-50 and up, ResNeXt).
    Bottleneck,
}

impl BlockKind {
    /// torchvision's `block.expansion`: output channels per plane.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The configuration of one [`ResidualBlock`] (torchvision's block `__init__` arguments).
#[derive(Config, Debug)]
pub struct ResidualBlockConfig {
    /// Basic block or bottleneck.
    pub kind: BlockKind,
    /// Input channels (`inplanes`).
    pub in_channels: usize,
    /// Planes; the block outputs `planes · expansion` channels.
    pub planes: usize,
    /// Stride of the 3×3 convolution (and of the downsampling 1×1).
    #[config(default = 1)]
    pub stride: usize,
    /// Groups of the bottleneck's 3×3 convolution (ResNeXt's cardinality).
    #[config(default = 1)]
    pub groups: usize,
    /// Channels per group at 64 planes (torchvision's `base_width`, the model's
    /// `width_per_group`).
    #[config(default = 64)]
    pub base_width: usize,
}

impl ResidualBlockConfig {
    /// Output channels, `planes · expansion`.
    pub fn out_channels(&self) -> usize {
        self.planes * self.kind.expansion()
    }

    /// The bottleneck's inner width, `⌊planes · base_width / 64⌋ · groups` (torchvision's
    /// `int(planes * (base_width / 64.0)) * groups`).
    pub fn width(&self) -> usize {
        self.planes * self.base_width / 64 * self.groups
    }

    /// Whether the identity path needs torchvision's `downsample` (1×1 conv + BN): when the
    /// stride or the channel count changes.
    pub fn has_downsample(&self) -> bool {
        self.stride != 1 || self.in_channels != self.out_channels()
    }

    /// Checks what torchvision checks (a basic block has no groups or other width) and that
    /// every size is positive.
    pub fn validate(&self) -> Result<()> {
        if self.kind == BlockKind::Basic && (self.groups != 1 || self.base_width != 64) {
            return Err(Error::Config(
                "BasicBlock only supports groups=1 and base_width=64".into(),
            ));
        }
        if self.in_channels == 0 || self.planes == 0 || self.stride == 0 || self.groups == 0 {
            return Err(Error::Config(format!(
                "a residual block needs positive channels, planes, stride and groups, got {self:?}"
            )));
        }
        if self.kind == BlockKind::Bottleneck && self.width() == 0 {
            return Err(Error::Config(format!(
                "a bottleneck of {} planes, base width {} has no channels",
                self.planes, self.base_width
            )));
        }
        Ok(())
    }

    /// Builds the block with torchvision's initialisation.
    pub fn init(&self, device: &Device) -> Result<ResidualBlock> {
        self.validate()?;
        let conv = |i, o, k| ConvBnActConfig::new(i, o).with_kernel_size(k);
        let relu = Activation::Relu;
        let linear = Activation::Identity;
        let (conv1, conv2, conv3) = match self.kind {
            BlockKind::Basic => (
                conv(self.in_channels, self.planes, 3)
                    .with_stride(self.stride)
                    .with_activation(relu),
                conv(self.planes, self.planes, 3).with_activation(linear),
                None,
            ),
            BlockKind::Bottleneck => (
                conv(self.in_channels, self.width(), 1).with_activation(relu),
                conv(self.width(), self.width(), 3)
                    .with_stride(self.stride)
                    .with_groups(self.groups)
                    .with_activation(relu),
                Some(conv(self.width(), self.out_channels(), 1).with_activation(linear)),
            ),
        };
        Ok(ResidualBlock {
            conv1: conv1.init(device),
            conv2: conv2.init(device),
            conv3: conv3.map(|c| c.init(device)),
            downsample: self.has_downsample().then(|| {
                conv(self.in_channels, self.out_channels(), 1)
                    .with_stride(self.stride)
                    .with_activation(linear)
                    .init(device)
            }),
            add_relu: FloatFunctional::new(),
        })
    }
}

/// A residual block: `add_relu(main(x), identity(x))` with
///
/// - basic: `main = bn2(conv2(relu(bn1(conv1(x)))))` (3×3, stride on `conv1`);
/// - bottleneck: `main = bn3(conv3(relu2(bn2(conv2(relu1(bn1(conv1(x))))))))` (1×1, 3×3 with
///   stride and groups, 1×1);
/// - `identity = bn(conv1x1(x))` (torchvision's `downsample`) or `x`.
///
/// Each conv + BN (+ ReLU) is one [`ConvBnAct`], fused by `fuse_model` as torchvision's
/// `_fuse_modules(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]])` (basic) or
/// `[["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3"]]` (bottleneck) and
/// `downsample` `["0", "1"]`. The join is torchvision's `add_relu` (basic) / `skip_add_relu`
/// (bottleneck) `FloatFunctional`, here `add_relu` for both. Shapes: `[N, in, H, W]` →
/// `[N, planes · expansion, ⌈H / stride⌉, ⌈W / stride⌉]`.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    /// First conv + BN + ReLU (basic: 3×3 with the stride; bottleneck: 1×1).
    pub conv1: ConvBnAct,
    /// Second conv + BN (basic: 3×3, no ReLU; bottleneck: grouped 3×3 with the stride + ReLU).
    pub conv2: ConvBnAct,
    /// The bottleneck's 1×1 expansion conv + BN (absent in a basic block).
    pub conv3: Option<ConvBnAct>,
    /// 1×1 conv + BN on the identity path, when the stride or channel count changes.
    pub downsample: Option<ConvBnAct>,
    /// The residual join `relu(main + identity)` (quantizable).
    pub add_relu: FloatFunctional,
}

/// torchvision's `QuantizableBasicBlock`: a [`ResidualBlock`] of [`BlockKind::Basic`].
pub type QuantizableBasicBlock = ResidualBlock;
/// torchvision's `QuantizableBottleneck`: a [`ResidualBlock`] of [`BlockKind::Bottleneck`].
pub type QuantizableBottleneck = ResidualBlock;

impl ResidualBlock {
    /// Forward pass on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        let out = self.conv2.forward(self.conv1.forward(x.clone()));
        let out = match &self.conv3 {
            Some(conv3) => conv3.forward(out),
            None => out,
        };
        let identity = match &self.downsample {
            Some(downsample) => downsample.forward(x),
            None => x,
        };
        self.add_relu.add_relu(out, identity)
    }

    /// Which block this is.
    pub fn kind(&self) -> BlockKind {
        if self.conv3.is_some() {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv3.as_ref().unwrap_or(&self.conv2).out_channels()
    }
}

crate::impl_quantizable!(ResidualBlock {
    conv1,
    conv2,
    conv3,
    downsample,
    add_relu
});
