//! torchvision's ShuffleNetV2 checkpoints: `torchvision.models.shufflenet_v2_x*()` (float) and
//! their `torchvision.models.quantization` counterparts with `quantize=True` (int8).

use std::path::Path;

use burn::tensor::Device;

use super::load_quantized;
use crate::int8::Engine;
use crate::io::{KeyMap, load_state_dict};
use crate::models::arch::{Arch, ArchOptions, Family};
use crate::models::shufflenet_v2::{ShuffleNetV2, ShuffleNetV2Config};
use crate::models::torchvision_model::{TorchvisionConfig, TorchvisionModel};
use crate::quant::QuantBackend;
use crate::{Error, Result};

/// torchvision's `Sequential` indices of each conv (and its BN right after it) in a block's
/// branches, with the index of the [`ConvBnAct`](crate::nn::ConvBnAct) here: `branch1` is
/// dw-conv, BN, conv, BN, ReLU; `branch2` conv, BN, ReLU, dw-conv, BN, conv, BN, ReLU.
const BRANCH_CONVS: [(&str, &[usize]); 2] = [("branch1", &[0, 2]), ("branch2", &[0, 3, 5])];

/// `stageS.I.` of every block, in order (the same in torchvision and here).
fn block_prefixes(config: &ShuffleNetV2Config) -> Vec<String> {
    (2..=4)
        .flat_map(|s| (0..config.stages_repeats[s - 2]).map(move |i| format!("stage{s}.{i}.")))
        .collect()
}

/// Every conv's torchvision prefix (`conv1.0.`, `stage2.0.branch2.3.`) with its path here
/// (`conv1.`, `stage2.0.branch2.1.`) and torchvision's index of its BN.
fn conv_prefixes(config: &ShuffleNetV2Config) -> Vec<(String, String, usize)> {
    let mut convs = vec![
        ("conv1.0.".to_string(), "conv1.".to_string(), 1),
        ("conv5.0.".to_string(), "conv5.".to_string(), 1),
    ];
    for block in block_prefixes(config) {
        for (branch, indices) in BRANCH_CONVS {
            for (k, &i) in indices.iter().enumerate() {
                convs.push((
                    format!("{block}{branch}.{i}."),
                    format!("{block}{branch}.{k}."),
                    i + 1,
                ));
            }
        }
    }
    convs
}

/// The map from torchvision's ShuffleNetV2 state-dict keys (float) to this crate's module
/// paths: each `Sequential`'s conv at index `i` and its BN at `i + 1` are one [`ConvBnAct`]'s
/// `conv.` / `bn.` (`stage2.0.branch2.3.` → `stage2.0.branch2.1.conv.`), `fc` the linear.
///
/// [`ConvBnAct`]: crate::nn::ConvBnAct
pub fn shufflenet_v2_key_map(config: &ShuffleNetV2Config) -> KeyMap {
    let mut map = KeyMap::new()
        .prefix("fc.", "fc.linear.")
        .ignore_suffix("num_batches_tracked");
    for (torch, burn, bn) in conv_prefixes(config) {
        let torch_bn = format!("{}{bn}.", &torch[..torch.len() - 2]);
        map = map
            .prefix(torch, format!("{burn}conv."))
            .prefix(torch_bn, format!("{burn}bn."));
    }
    map
}

/// Builds a [`ShuffleNetV2`] from `config` and loads the torchvision float state dict at
/// `path` (`torch.save(torchvision.models.shufflenet_v2_x1_0(...).state_dict(), path)`, or the
/// quantizable model's before `fuse_model`). Missing, unexpected and mis-shaped keys are errors
/// naming the key.
pub fn load_shufflenet_v2(
    path: &Path,
    config: &ShuffleNetV2Config,
    device: &Device,
) -> Result<ShuffleNetV2> {
    let model = config.init(device)?;
    load_state_dict(model, path, &shufflenet_v2_key_map(config))
}

/// The map from torchvision's converted (int8) ShuffleNetV2 keys to this crate's module paths:
/// after `fuse_model` and `convert` each conv + BN (+ ReLU) is one quantized conv named after
/// its conv (`conv1.0`, `stage2.0.branch2.3`), and each block's `cat` keeps its name.
pub fn quantized_shufflenet_v2_key_map(config: &ShuffleNetV2Config) -> KeyMap {
    let map = KeyMap::new()
        .prefix("quant.", "quant.")
        .prefix("fc.", "fc.");
    conv_prefixes(config)
        .into_iter()
        .fold(map, |map, (torch, burn, _)| map.prefix(torch, burn))
}

/// Builds a [`ShuffleNetV2`] from `config` and loads torchvision's int8 checkpoint at `path`
/// (the state dict of `torchvision.models.quantization.shufflenet_v2_x1_0(quantize=True)` and
/// the others, e.g. the official `shufflenetv2_x1_fbgemm-1e62bb32.pth`) into its int8 layers,
/// to run with [`forward_int8`](crate::nn::ImageClassifier::forward_int8) and `engine`'s arithmetic (`x86`/`fbgemm` for
/// torchvision's checkpoints). The float parameters stay at their initial values. Missing,
/// unexpected and mis-shaped entries are errors naming the torchvision key.
pub fn load_quantized_shufflenet_v2(
    path: &Path,
    config: &ShuffleNetV2Config,
    engine: Engine,
    device: &Device,
) -> Result<ShuffleNetV2> {
    load_quantized(
        path,
        config.init(device)?,
        &quantized_shufflenet_v2_key_map(config),
        engine,
    )
}

impl TorchvisionConfig for ShuffleNetV2Config {
    type Model = ShuffleNetV2;
}

/// The four builders, as torchvision's `shufflenet_v2_x0_5()` … `shufflenet_v2_x2_0()`
/// configure them.
const BUILDERS: [(Arch, fn() -> ShuffleNetV2Config); 4] = [
    (Arch::ShuffleNetV2x0_5, ShuffleNetV2Config::x0_5),
    (Arch::ShuffleNetV2x1_0, ShuffleNetV2Config::x1_0),
    (Arch::ShuffleNetV2x1_5, ShuffleNetV2Config::x1_5),
    (Arch::ShuffleNetV2x2_0, ShuffleNetV2Config::x2_0),
];

impl TorchvisionModel for ShuffleNetV2 {
    type Config = ShuffleNetV2Config;
    const FAMILY: Family = Family::ShuffleNetV2;
    const DEFAULT_BACKEND: QuantBackend = QuantBackend::Fbgemm;

    fn arch_config(arch: Arch, options: &ArchOptions) -> Result<ShuffleNetV2Config> {
        options.refuse_width_mult(arch)?;
        let (_, config) = BUILDERS
            .iter()
            .find(|(a, _)| *a == arch)
            .ok_or_else(|| Error::Config(format!("--arch {arch} is not a ShuffleNetV2")))?;
        Ok(config().with_num_classes(options.num_classes()))
    }

    fn config_arch(config: &ShuffleNetV2Config) -> Option<Arch> {
        let same = |b: &ShuffleNetV2Config| {
            (b.stages_repeats, b.stages_out_channels)
                == (config.stages_repeats, config.stages_out_channels)
        };
        BUILDERS.iter().find(|(_, b)| same(&b())).map(|(a, _)| *a)
    }

    fn check_config(config: &ShuffleNetV2Config) -> Result<()> {
        config.validate()
    }

    fn check_forward_size(config: &ShuffleNetV2Config, n: usize, h: usize, w: usize) -> Result<()> {
        config.check_forward_size(n, h, w, false)
    }

    fn config_num_classes(config: &ShuffleNetV2Config) -> usize {
        config.num_classes
    }

    fn build(config: &ShuffleNetV2Config, device: &Device) -> Result<Self> {
        config.init(device)
    }

    fn load_torchvision(path: &Path, config: &ShuffleNetV2Config, device: &Device) -> Result<Self> {
        load_shufflenet_v2(path, config, device)
    }

    fn load_torchvision_int8(
        path: &Path,
        config: &ShuffleNetV2Config,
        engine: Engine,
        device: &Device,
    ) -> Result<Self> {
        load_quantized_shufflenet_v2(path, config, engine, device)
    }

    fn check_batch_shape(shape: &[usize]) -> Result<()> {
        ShuffleNetV2::check_input_shape(shape)
    }

    fn num_classes(&self) -> usize {
        ShuffleNetV2::num_classes(self)
    }

    fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        ShuffleNetV2::fuse_model(self, is_qat)
    }
}
