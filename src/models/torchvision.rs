//! torchvision checkpoints for [`MobileNetV2`] and [`ResNet`]: the state-dict key layouts of
//! `torchvision.models.mobilenet_v2()` / `resnet*()` / `resnext*()` (float) and of their
//! `torchvision.models.quantization` counterparts with `quantize=True` (int8, after `convert`),
//! and loading either `.pth` file into the Burn model.

use std::path::Path;

use burn::tensor::Device;

use super::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use super::resnet::{ResNet, ResNetConfig};
use crate::int8::{Engine, Int8Add, QParamsPt};
use crate::io::{KeyMap, StateValue, load_state_dict, read_quantized_state_dict};
use crate::io::{StateDict, load_int8_state_dict};
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

/// torchvision's int8 state dict renamed to this crate's paths, with quantized linear layers'
/// packed `(weight, bias)` tuples unpacked into `weight` / `bias` entries.
fn rename_quantized_state(state: StateDict, map: &KeyMap) -> Result<StateDict> {
    let mut out = StateDict::new();
    for (key, value) in state {
        if let Some(layer) = key.strip_suffix("._packed_params.dtype") {
            match &value {
                StateValue::Other(dtype) if dtype.contains("qint8") => continue,
                _ => {
                    return Err(Error::mismatch(format!(
                        "`{layer}` is a quantized linear layer of dtype {value:?}; only qint8 \
                         weights are supported"
                    )));
                }
            }
        }
        if let Some(layer) = key.strip_suffix("._packed_params._packed_params") {
            let StateValue::Tuple(items) = value else {
                return Err(Error::mismatch(format!(
                    "`{key}` should be a (weight, bias) tuple, found a {}",
                    value.kind()
                )));
            };
            let mut items = items.into_iter();
            let (Some(weight), bias) = (items.next(), items.next()) else {
                return Err(Error::mismatch(format!("`{key}` is an empty tuple")));
            };
            let layer = map.to_burn(&format!("{layer}."));
            out.insert(format!("{layer}weight"), weight);
            out.insert(format!("{layer}bias"), bias.unwrap_or(StateValue::None));
            continue;
        }
        out.insert(map.to_burn(&key), value);
    }
    Ok(out)
}

/// Builds a [`MobileNetV2`] from `config` and loads torchvision's int8 checkpoint at `path`
/// (the state dict of `torchvision.models.quantization.mobilenet_v2(quantize=True)`, e.g. the
/// official `mobilenet_v2_qnnpack_37f702c5.pth`; zip or legacy format) into its int8 layers,
/// to run with [`MobileNetV2::forward_int8`] and `engine`'s arithmetic (`qnnpack` for
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

/// Reads torchvision's int8 state dict at `path` into `model`'s int8 layers (ReLU6 replaced by
/// ReLU first, as torchvision's quantizable models do), errors naming the torchvision key.
fn load_quantized<M: crate::nn::Quantizable + Clone>(
    path: &Path,
    mut model: M,
    map: &KeyMap,
    engine: Engine,
) -> Result<M> {
    let state = read_quantized_state_dict(path)?;
    crate::quantize::replace_relu(&mut model)?;
    let state = rename_quantized_state(state, map).map_err(|e| e.at_path(path))?;
    load_int8_state_dict(&mut model, &state, engine)
        .map_err(|e| rename_back(e, map).at_path(path))?;
    Ok(model)
}

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

/// An error about this crate's paths, told with torchvision's keys.
fn rename_back(error: Error, map: &KeyMap) -> Error {
    match error {
        Error::CheckpointMismatch { path, reason } => {
            let reason = reason
                .split('`')
                .enumerate()
                .map(|(i, part)| {
                    if i % 2 == 1 {
                        map.to_pytorch(part)
                    } else {
                        part.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("`");
            Error::CheckpointMismatch { path, reason }
        }
        other => other,
    }
}
