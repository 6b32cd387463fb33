//! torchvision's MobileNetV2 checkpoints: `torchvision.models.mobilenet_v2()` (float) and
//! `torchvision.models.quantization.mobilenet_v2(quantize=True)` (int8).

use std::path::Path;

use burn::tensor::Device;

use super::load_quantized;
use crate::int8::{Engine, Int8Add, QParamsPt};
use crate::io::{KeyMap, load_state_dict};
use crate::models::arch::{Arch, ArchOptions, Family};
use crate::models::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use crate::models::torchvision_model::{TorchvisionConfig, TorchvisionModel};
use crate::quant::QuantBackend;
use crate::{Error, Result};

/// The map from torchvision's MobileNetV2 state-dict keys to this crate's module paths.
///
/// torchvision nests everything in `features` (a Sequential) and each block in `conv` (a
/// Sequential whose indices shift when the block has no expansion layer), so the map is built
/// from the configuration, block by block.
pub fn mobilenet_v2_key_map(config: &MobileNetV2Config) -> KeyMap {
    let blocks = config.block_configs();
    let mut map = KeyMap::new()
        .prefix("features.0.0.", "stem.conv.")
        .prefix("features.0.1.", "stem.bn.")
        .ignore_suffix("num_batches_tracked");
    for (i, block) in blocks.iter().enumerate() {
        let torch = format!("features.{}.conv.", i + 1);
        let burn = format!("blocks.{i}.");
        let mut index = 0;
        if block.expand_ratio != 1 {
            map = map
                .prefix(format!("{torch}0.0."), format!("{burn}expand.conv."))
                .prefix(format!("{torch}0.1."), format!("{burn}expand.bn."));
            index = 1;
        }
        map = map
            .prefix(
                format!("{torch}{index}.0."),
                format!("{burn}depthwise.conv."),
            )
            .prefix(format!("{torch}{index}.1."), format!("{burn}depthwise.bn."))
            .prefix(
                format!("{torch}{}.", index + 1),
                format!("{burn}project.conv."),
            )
            .prefix(
                format!("{torch}{}.", index + 2),
                format!("{burn}project.bn."),
            );
    }
    let head = blocks.len() + 1;
    map.prefix(format!("features.{head}.0."), "head.conv.")
        .prefix(format!("features.{head}.1."), "head.bn.")
        .prefix("classifier.1.", "classifier.linear.")
}

/// Builds a [`MobileNetV2`] from `config` and loads the torchvision float state dict at `path`
/// (`torch.save(torchvision.models.mobilenet_v2(...).state_dict(), path)`, zip or legacy
/// format). Missing, unexpected and mis-shaped keys are errors that name the key.
pub fn load_mobilenet_v2(
    path: &Path,
    config: &MobileNetV2Config,
    device: &Device,
) -> Result<MobileNetV2> {
    let model = config.init(device)?;
    load_state_dict(model, path, &mobilenet_v2_key_map(config))
}

/// The map from torchvision's converted (int8) MobileNetV2 state-dict keys to this crate's
/// module paths. After `fuse_model` and `convert`, each `Conv2dNormActivation` is one quantized
/// conv at index 0 of its Sequential (`features.0.0.weight`), a block's projection is a plain
/// quantized conv (`features.2.conv.2.weight`), and the classifier is `classifier.1`.
pub fn quantized_mobilenet_v2_key_map(config: &MobileNetV2Config) -> KeyMap {
    let blocks = config.block_configs();
    let mut map = KeyMap::new()
        .prefix("quant.", "quant.")
        .prefix("features.0.0.", "stem.");
    for (i, block) in blocks.iter().enumerate() {
        let torch = format!("features.{}.", i + 1);
        let burn = format!("blocks.{i}.");
        let mut index = 0;
        if block.expand_ratio != 1 {
            map = map.prefix(format!("{torch}conv.0.0."), format!("{burn}expand."));
            index = 1;
        }
        map = map
            .prefix(
                format!("{torch}conv.{index}.0."),
                format!("{burn}depthwise."),
            )
            .prefix(
                format!("{torch}conv.{}.", index + 1),
                format!("{burn}project."),
            )
            .prefix(format!("{torch}skip_add."), format!("{burn}skip_add."));
    }
    let head = blocks.len() + 1;
    map.prefix(format!("features.{head}.0."), "head.")
        .prefix("classifier.1.", "classifier.")
}

/// Builds a [`MobileNetV2`] from `config` and loads torchvision's int8 checkpoint at `path`
/// (the state dict of `torchvision.models.quantization.mobilenet_v2(quantize=True)`, e.g. the
/// official `mobilenet_v2_qnnpack_37f702c5.pth`; zip or legacy format) into its int8 layers,
/// to run with [`forward_int8`](crate::nn::ImageClassifier::forward_int8) and `engine`'s arithmetic (`qnnpack` for
/// torchvision's per-tensor checkpoint). ReLU6 is replaced by ReLU, as torchvision's
/// quantizable model does; the float parameters stay at their initial values. Missing,
/// unexpected and mis-shaped entries are errors naming the torchvision key.
///
/// With [`Engine::Qnnpack`], every residual add is checked against qnnpack's limit on the
/// ratio of input to output scale (see [`Int8Add::params`]): PyTorch refuses such an add when
/// it first runs; this loader refuses it here, naming the file and the add's `.scale` key.
pub fn load_quantized_mobilenet_v2(
    path: &Path,
    config: &MobileNetV2Config,
    engine: Engine,
    device: &Device,
) -> Result<MobileNetV2> {
    let map = quantized_mobilenet_v2_key_map(config);
    let model = load_quantized(path, config.init(device)?, &map, engine)?;
    check_adds(&model, engine, &map)
        .map_err(|(key, reason)| Error::Quant(format!("{}: `{key}`: {reason}", path.display())))?;
    Ok(model)
}

/// Checks that every residual add of a loaded int8 model can run with `engine`'s arithmetic
/// (qnnpack limits the input/output scale ratios). On failure: the torchvision key of the add's
/// output scale and the reason, without the error's own prefix (the caller names the file).
fn check_adds(
    model: &MobileNetV2,
    engine: Engine,
    map: &KeyMap,
) -> std::result::Result<(), (String, String)> {
    let output = |conv: &crate::nn::ConvBnAct| conv.int8.as_ref().map(|c| c.output_qparams());
    // Blocks take the stem's output first, then each block's (the add's, where it has one).
    let mut input: Option<QParamsPt> = output(&model.stem);
    for (i, block) in model.blocks.iter().enumerate() {
        let projected = output(&block.project);
        if !block.use_res_connect {
            input = projected;
            continue;
        }
        let (Some(a), Some(b), Some(add)) = (input, projected, block.skip_add.int8) else {
            return Ok(()); // Not converted: the forward says so itself.
        };
        let key = map.to_pytorch(&format!("blocks.{i}.skip_add.scale"));
        match Int8Add::new(add.qparams, false, engine).params(a, b) {
            Ok(_) => {}
            Err(Error::Quant(reason)) => return Err((key, reason)),
            Err(other) => return Err((key, other.to_string())),
        }
        input = Some(add.qparams);
    }
    Ok(())
}

impl TorchvisionConfig for MobileNetV2Config {
    type Model = MobileNetV2;
}

impl TorchvisionModel for MobileNetV2 {
    type Config = MobileNetV2Config;
    const FAMILY: Family = Family::MobileNetV2;
    const DEFAULT_BACKEND: QuantBackend = QuantBackend::Qnnpack;

    fn arch_config(arch: Arch, options: &ArchOptions) -> Result<MobileNetV2Config> {
        if arch != Arch::MobileNetV2 {
            return Err(Error::Config(format!("--arch {arch} is not a MobileNetV2")));
        }
        Ok(MobileNetV2Config::new()
            .with_width_mult(options.width_mult.unwrap_or(1.0))
            .with_num_classes(options.num_classes()))
    }

    /// Every MobileNetV2 is `mobilenet_v2`, whatever its width.
    fn config_arch(_: &MobileNetV2Config) -> Option<Arch> {
        Some(Arch::MobileNetV2)
    }

    fn check_config(config: &MobileNetV2Config) -> Result<()> {
        config.validate()?;
        config.check_model_size()
    }

    fn check_forward_size(config: &MobileNetV2Config, n: usize, h: usize, w: usize) -> Result<()> {
        config.check_forward_size(n, h, w, false)
    }

    fn config_num_classes(config: &MobileNetV2Config) -> usize {
        config.num_classes
    }

    fn config_width_mult(config: &MobileNetV2Config) -> Option<f64> {
        Some(config.width_mult)
    }

    fn build(config: &MobileNetV2Config, device: &Device) -> Result<Self> {
        config.init(device)
    }

    fn load_torchvision(path: &Path, config: &MobileNetV2Config, device: &Device) -> Result<Self> {
        load_mobilenet_v2(path, config, device)
    }

    fn load_torchvision_int8(
        path: &Path,
        config: &MobileNetV2Config,
        engine: Engine,
        device: &Device,
    ) -> Result<Self> {
        load_quantized_mobilenet_v2(path, config, engine, device)
    }

    fn check_batch_shape(shape: &[usize]) -> Result<()> {
        MobileNetV2::check_input_shape(shape)
    }

    fn num_classes(&self) -> usize {
        MobileNetV2::num_classes(self)
    }

    fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        MobileNetV2::fuse_model(self, is_qat)
    }
}
