//! torchvision's ResNet / ResNeXt checkpoints: `torchvision.models.resnet*()` /
//! `resnext*()` (float) and their `torchvision.models.quantization` counterparts with
//! `quantize=True` (int8).

use std::path::Path;

use burn::tensor::Device;

use super::load_quantized;
use crate::Result;
use crate::int8::Engine;
use crate::io::{KeyMap, load_state_dict};
use crate::models::resnet::{ResNet, ResNetConfig};

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
/// [`ResNet::forward_int8`] and `engine`'s arithmetic (`x86`/`fbgemm` for torchvision's
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
