//! torchvision's ResNet / ResNeXt checkpoints: `torchvision.models.resnet*()` /
//! `resnext*()` (float) and their `torchvision.models.quantization` counterparts with
//! `quantize=True` (int8).

use std::path::Path;

use burn::tensor::Device;

use super::load_quantized;
use crate::int8::Engine;
use crate::io::{KeyMap, load_state_dict};
use crate::models::arch::{Arch, ArchOptions, Family};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::models::torchvision_model::{TorchvisionConfig, TorchvisionModel};
use crate::quant::QuantBackend;
use crate::{Error, Result};

/// The map from torchvision's ResNet / ResNeXt state-dict keys (float) to this crate's module
/// paths: `conv1` / `bn1` are the stem, each block's `convK` / `bnK` one [`ConvBnAct`]
/// (`layerS.I.convK.conv.` / `.bn.`), `downsample.0` / `.1` its conv and BN, `fc` the linear.
///
/// [`ConvBnAct`]: crate::nn::ConvBnAct
pub fn resnet_key_map(config: &ResNetConfig) -> KeyMap {
    let mut map = KeyMap::new()
        .prefix("conv1.", "stem.conv.")
        .prefix("bn1.", "stem.bn.")
        .prefix("fc.", "fc.linear.")
        .ignore_suffix("num_batches_tracked");
    for block in resnet_block_prefixes(config) {
        for k in 1..=3 {
            map = map
                .prefix(format!("{block}conv{k}."), format!("{block}conv{k}.conv."))
                .prefix(format!("{block}bn{k}."), format!("{block}conv{k}.bn."));
        }
        map = map
            .prefix(
                format!("{block}downsample.0."),
                format!("{block}downsample.conv."),
            )
            .prefix(
                format!("{block}downsample.1."),
                format!("{block}downsample.bn."),
            );
    }
    map
}

/// `layerS.I.` of every block, in order (the same in torchvision and here).
fn resnet_block_prefixes(config: &ResNetConfig) -> Vec<String> {
    (1..=4)
        .flat_map(|s| (0..config.layers[s - 1]).map(move |i| format!("layer{s}.{i}.")))
        .collect()
}

/// Builds a [`ResNet`] from `config` and loads the torchvision float state dict at `path`
/// (`torch.save(torchvision.models.resnet18(...).state_dict(), path)`, or the quantizable
/// model's before `fuse_model`). Missing, unexpected and mis-shaped keys are errors naming the
/// key.
pub fn load_resnet(path: &Path, config: &ResNetConfig, device: &Device) -> Result<ResNet> {
    let model = config.init(device)?;
    load_state_dict(model, path, &resnet_key_map(config))
}

/// The map from torchvision's converted (int8) ResNet keys to this crate's module paths: after
/// `fuse_model` and `convert` each conv + BN (+ ReLU) is one quantized conv named after its
/// conv (`conv1`, `layerS.I.convK`, `layerS.I.downsample.0`), and the bottleneck's
/// `skip_add_relu` is this crate's `add_relu`.
pub fn quantized_resnet_key_map(config: &ResNetConfig) -> KeyMap {
    let mut map = KeyMap::new()
        .prefix("quant.", "quant.")
        .prefix("conv1.", "stem.")
        .prefix("fc.", "fc.");
    for block in resnet_block_prefixes(config) {
        map = map
            .prefix(
                format!("{block}downsample.0."),
                format!("{block}downsample."),
            )
            .prefix(
                format!("{block}skip_add_relu."),
                format!("{block}add_relu."),
            );
    }
    map
}

/// Builds a [`ResNet`] from `config` and loads torchvision's int8 checkpoint at `path` (the
/// state dict of `torchvision.models.quantization.resnet18(quantize=True)` and the others,
/// e.g. the official `resnet18_fbgemm_16fa66dd.pth`) into its int8 layers, to run with
/// [`forward_int8`](crate::nn::ImageClassifier::forward_int8) and `engine`'s arithmetic (`x86`/`fbgemm` for torchvision's
/// per-channel checkpoints). The float parameters stay at their initial values. Missing,
/// unexpected and mis-shaped entries are errors naming the torchvision key.
pub fn load_quantized_resnet(
    path: &Path,
    config: &ResNetConfig,
    engine: Engine,
    device: &Device,
) -> Result<ResNet> {
    load_quantized(
        path,
        config.init(device)?,
        &quantized_resnet_key_map(config),
        engine,
    )
}

impl TorchvisionConfig for ResNetConfig {
    type Model = ResNet;
}

/// The four builders, as torchvision's `resnet18()` … `resnext101_64x4d()` configure them.
const BUILDERS: [(Arch, fn() -> ResNetConfig); 4] = [
    (Arch::ResNet18, ResNetConfig::resnet18),
    (Arch::ResNet50, ResNetConfig::resnet50),
    (Arch::ResNeXt101_32x8d, ResNetConfig::resnext101_32x8d),
    (Arch::ResNeXt101_64x4d, ResNetConfig::resnext101_64x4d),
];

impl TorchvisionModel for ResNet {
    type Config = ResNetConfig;
    const FAMILY: Family = Family::ResNet;
    const DEFAULT_BACKEND: QuantBackend = QuantBackend::Fbgemm;

    fn arch_config(arch: Arch, options: &ArchOptions) -> Result<ResNetConfig> {
        options.refuse_width_mult(arch)?;
        let (_, config) = BUILDERS
            .iter()
            .find(|(a, _)| *a == arch)
            .ok_or_else(|| Error::Config(format!("--arch {arch} is not a ResNet")))?;
        Ok(config().with_num_classes(options.num_classes()))
    }

    fn config_arch(config: &ResNetConfig) -> Option<Arch> {
        let same = |b: &ResNetConfig| {
            (b.block, b.layers, b.groups, b.width_per_group, b.width)
                == (
                    config.block,
                    config.layers,
                    config.groups,
                    config.width_per_group,
                    config.width,
                )
        };
        BUILDERS.iter().find(|(_, b)| same(&b())).map(|(a, _)| *a)
    }

    fn check_config(config: &ResNetConfig) -> Result<()> {
        config.validate()
    }

    fn check_forward_size(config: &ResNetConfig, n: usize, h: usize, w: usize) -> Result<()> {
        config.check_forward_size(n, h, w)
    }

    fn config_num_classes(config: &ResNetConfig) -> usize {
        config.num_classes
    }

    fn build(config: &ResNetConfig, device: &Device) -> Result<Self> {
        config.init(device)
    }

    fn load_torchvision(path: &Path, config: &ResNetConfig, device: &Device) -> Result<Self> {
        load_resnet(path, config, device)
    }

    fn load_torchvision_int8(
        path: &Path,
        config: &ResNetConfig,
        engine: Engine,
        device: &Device,
    ) -> Result<Self> {
        load_quantized_resnet(path, config, engine, device)
    }

    fn check_batch_shape(shape: &[usize]) -> Result<()> {
        ResNet::check_input_shape(shape)
    }

    fn num_classes(&self) -> usize {
        ResNet::num_classes(self)
    }

    fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        ResNet::fuse_model(self, is_qat)
    }
}
