//! torchvision's MobileNetV3 checkpoints: `torchvision.models.mobilenet_v3_large()` /
//! `mobilenet_v3_small()` (float) and the quantizable model's converted state dict (int8).

use std::path::Path;

use burn::tensor::Device;

use super::load_quantized;
use crate::int8::Engine;
use crate::io::{KeyMap, load_state_dict, read_state_dict_keys};
use crate::models::arch::{Arch, ArchOptions, Family};
use crate::models::mobilenet_v3::{MobileNetV3, MobileNetV3Arch, MobileNetV3Config};
use crate::models::torchvision_model::{TorchvisionConfig, TorchvisionModel};
use crate::quant::{QConfig, QuantBackend};
use crate::{Error, Result};

/// One layer of a block as torchvision indexes it (`features.I.block.J.`) and as this crate
/// names it (`blocks.I-1.<name>.`), in order: expansion, depthwise, squeeze-excitation,
/// projection.
fn block_layers(config: &MobileNetV3Config) -> Vec<(String, String, &'static str)> {
    let mut layers = Vec::new();
    for (i, block) in config.block_configs().iter().enumerate() {
        let (torch, burn) = (format!("features.{}.", i + 1), format!("blocks.{i}."));
        let names = [
            block.has_expansion().then_some("expand"),
            Some("depthwise"),
            block.use_se.then_some("se"),
            Some("project"),
        ];
        for (j, name) in names.into_iter().flatten().enumerate() {
            layers.push((format!("{torch}block.{j}."), burn.clone(), name));
        }
    }
    layers
}

/// The map from torchvision's float MobileNetV3 state-dict keys to this crate's module paths:
/// each `Conv2dNormActivation`'s `0` / `1` are its conv and BN (`stem.conv.conv.`,
/// `stem.conv.bn.`), a squeeze-excitation's `fc1` / `fc2` its two convolutions, and the
/// classifier's `0` / `3` the `hidden` and `classifier` linear layers.
pub fn mobilenet_v3_key_map(config: &MobileNetV3Config) -> KeyMap {
    let head = config.block_configs().len() + 1;
    let conv_norm = |map: KeyMap, torch: &str, burn: &str| {
        map.prefix(format!("{torch}0."), format!("{burn}conv.conv."))
            .prefix(format!("{torch}1."), format!("{burn}conv.bn."))
    };
    let mut map = KeyMap::new()
        .prefix("classifier.0.", "hidden.linear.")
        .prefix("classifier.3.", "classifier.linear.")
        .ignore_suffix("num_batches_tracked");
    map = conv_norm(map, "features.0.", "stem.");
    map = conv_norm(map, &format!("features.{head}."), "head.");
    for (torch, burn, name) in block_layers(config) {
        map = match name {
            "se" => map
                .prefix(format!("{torch}fc1."), format!("{burn}se.fc1.conv."))
                .prefix(format!("{torch}fc2."), format!("{burn}se.fc2.conv.")),
            "project" => map
                .prefix(format!("{torch}0."), format!("{burn}project.conv."))
                .prefix(format!("{torch}1."), format!("{burn}project.bn.")),
            _ => conv_norm(map, &torch, &format!("{burn}{name}.")),
        };
    }
    map
}

/// Builds a [`MobileNetV3`] from `config` and loads the torchvision float state dict at `path`
/// (`torch.save(torchvision.models.mobilenet_v3_large(...).state_dict(), path)`, or the
/// quantizable model's before `fuse_model`). Missing, unexpected and mis-shaped keys are
/// errors naming the key.
pub fn load_mobilenet_v3(
    path: &Path,
    config: &MobileNetV3Config,
    device: &Device,
) -> Result<MobileNetV3> {
    let model = config.init(device)?;
    load_state_dict(model, path, &mobilenet_v3_key_map(config))
}

/// The map from torchvision's converted (int8) MobileNetV3 keys to this crate's module paths:
/// after `fuse_model` and `convert` each `Conv2dNormActivation` is one quantized conv at its
/// index 0 and, with hardswish, a quantized hardswish at index 2 (`features.0.2.scale`); a
/// squeeze-excitation holds its quantized `fc1` (ConvReLU2d), `fc2` and `skip_mul`.
pub fn quantized_mobilenet_v3_key_map(config: &MobileNetV3Config) -> KeyMap {
    let head = config.block_configs().len() + 1;
    let conv_norm = |map: KeyMap, torch: &str, burn: &str| {
        map.prefix(format!("{torch}0."), format!("{burn}conv."))
            .prefix(format!("{torch}2."), format!("{burn}hardswish."))
    };
    let mut map = KeyMap::new()
        .prefix("quant.", "quant.")
        .prefix("classifier.0.", "hidden.")
        .prefix("classifier.1.", "hardswish.")
        .prefix("classifier.3.", "classifier.");
    map = conv_norm(map, "features.0.", "stem.");
    map = conv_norm(map, &format!("features.{head}."), "head.");
    map = skip_adds(map, config);
    for (torch, burn, name) in block_layers(config) {
        map = match name {
            "se" => map.prefix(torch, format!("{burn}se.")),
            "project" => map.prefix(format!("{torch}0."), format!("{burn}project.")),
            _ => conv_norm(map, &torch, &format!("{burn}{name}.")),
        };
    }
    map
}

/// Each block's `skip_add` (`features.I.skip_add.` → `blocks.I-1.skip_add.`), in the int8
/// and QAT maps.
fn skip_adds(map: KeyMap, config: &MobileNetV3Config) -> KeyMap {
    (0..config.block_configs().len()).fold(map, |map, i| {
        map.prefix(
            format!("features.{}.skip_add.", i + 1),
            format!("blocks.{i}.skip_add."),
        )
    })
}

/// Builds a [`MobileNetV3`] from `config` and loads torchvision's int8 state dict at `path`
/// (the state dict of the quantizable model after `fuse_model`, `prepare` or `prepare_qat`
/// and `convert`) into its int8 layers, to run with [`forward_int8`](crate::nn::ImageClassifier::forward_int8) and
/// `engine`'s arithmetic (`qnnpack` for torchvision's per-tensor models). The float parameters
/// stay at their initial values. Missing, unexpected and mis-shaped entries are errors naming
/// the torchvision key.
///
/// torchvision's official `mobilenet_v3_large_qnnpack-5bcacf28.pth` is not such a state dict:
/// it holds the QAT model before `convert` (torchvision loads it after `prepare_qat` and
/// converts afterwards); load it with [`load_qat_mobilenet_v3`] and convert, or with
/// [`load_any_int8_mobilenet_v3`], which takes either form.
pub fn load_quantized_mobilenet_v3(
    path: &Path,
    config: &MobileNetV3Config,
    engine: Engine,
    device: &Device,
) -> Result<MobileNetV3> {
    load_quantized(
        path,
        config.init(device)?,
        &quantized_mobilenet_v3_key_map(config),
        engine,
    )
}

/// PyTorch's QAT module at `torch` (a fused `ConvBn2d` / `ConvBnReLU2d`, a QAT `Conv2d` /
/// `ConvReLU2d` or `Linear`: weight and bias on the module itself) onto this crate's layer at
/// `burn` (a [`ConvBnAct`](crate::nn::ConvBnAct) or [`LinearBnAct`](crate::nn::LinearBnAct),
/// whose float layer is `inner`).
fn qat_weighted(map: KeyMap, torch: &str, burn: &str, inner: &str) -> KeyMap {
    ["bn.", "weight_fake_quant.", "activation_post_process."]
        .into_iter()
        .fold(map, |map, part| {
            map.prefix(format!("{torch}{part}"), format!("{burn}{part}"))
        })
        .prefix(torch.to_string(), format!("{burn}{inner}."))
}

/// The map from the keys of torchvision's QAT-prepared MobileNetV3 (`fuse_model(is_qat=True)`
/// and `prepare_qat`, before `convert`: the form of torchvision's official
/// `mobilenet_v3_large_qnnpack-5bcacf28.pth`) to this crate's module paths, the crate model
/// being fused for QAT and prepared with the same qconfig. Each fused conv holds its weight,
/// `bn`, `weight_fake_quant` and `activation_post_process`; a hardswish, `skip_add`,
/// `skip_mul` and the hardsigmoid (`scale_activation`) hold their output fake-quant.
pub fn qat_mobilenet_v3_key_map(config: &MobileNetV3Config) -> KeyMap {
    let head = config.block_configs().len() + 1;
    let conv_norm = |map: KeyMap, torch: &str, burn: &str| {
        qat_weighted(map, &format!("{torch}0."), &format!("{burn}conv."), "conv")
            .prefix(format!("{torch}2."), format!("{burn}hardswish."))
    };
    let mut map = KeyMap::new()
        .prefix("quant.", "quant.")
        .prefix("classifier.1.", "hardswish.")
        .ignore_suffix("num_batches_tracked")
        .ignore_suffix("activation_post_process.eps")
        .optional_suffix("freeze_bn");
    // torchvision's `QuantizableSqueezeExcitation._load_from_state_dict` fills in the
    // hardsigmoid's fake-quant entries that checkpoints before its version 2 lack.
    for entry in [
        "scale",
        "zero_point",
        "fake_quant_enabled",
        "observer_enabled",
        "activation_post_process.scale",
        "activation_post_process.zero_point",
    ] {
        map = map.optional_suffix(format!("scale_activation.activation_post_process.{entry}"));
    }
    map = qat_weighted(map, "classifier.0.", "hidden.", "linear");
    map = qat_weighted(map, "classifier.3.", "classifier.", "linear");
    map = conv_norm(map, "features.0.", "stem.");
    map = conv_norm(map, &format!("features.{head}."), "head.");
    map = skip_adds(map, config);
    for (torch, burn, name) in block_layers(config) {
        map = match name {
            "se" => {
                let se = format!("{burn}se.");
                let map = qat_weighted(map, &format!("{torch}fc1."), &format!("{se}fc1."), "conv");
                qat_weighted(map, &format!("{torch}fc2."), &format!("{se}fc2."), "conv")
                    .prefix(torch, se)
            }
            "project" => qat_weighted(
                map,
                &format!("{torch}0."),
                &format!("{burn}project."),
                "conv",
            ),
            _ => conv_norm(map, &torch, &format!("{burn}{name}.")),
        };
    }
    map
}

/// Builds a [`MobileNetV3`] from `config`, fuses it for QAT, prepares it with `qconfig` and
/// loads torchvision's QAT state dict at `path` into it (`fuse_model(is_qat=True)`,
/// `prepare_qat` with the same qconfig, `load_state_dict`): the weights, batch norms, observer
/// ranges, qparams and switches. This is how torchvision builds its quantized MobileNetV3 from
/// the official `mobilenet_v3_large_qnnpack-5bcacf28.pth` (with
/// `QConfig::default_qat(QuantBackend::Qnnpack)`); [`convert`](crate::convert::convert) the
/// result for the int8 model, or train it on. Missing, unexpected and mis-shaped entries are
/// errors naming the torchvision key, except the hardsigmoids' fake-quant entries, which
/// checkpoints written before torchvision's `QuantizableSqueezeExcitation` version 2 lack
/// (torchvision fills them in; here they keep their fixed values, which the forward uses
/// anyway).
pub fn load_qat_mobilenet_v3(
    path: &Path,
    config: &MobileNetV3Config,
    qconfig: QConfig,
    device: &Device,
) -> Result<MobileNetV3> {
    let mut model = config.init(device)?;
    model.fuse_model(Some(true))?;
    crate::quantize::prepare_qat(&mut model, qconfig, device)?;
    load_state_dict(model, path, &qat_mobilenet_v3_key_map(config))
}

/// Whether a MobileNetV3 state dict is a QAT model saved before `convert` (the form of
/// torchvision's official `mobilenet_v3_large_qnnpack-5bcacf28.pth`): it holds fake-quant
/// modules' entries (`…weight_fake_quant.scale`, `…activation_post_process.scale`), which a
/// converted state dict never has.
pub fn is_qat_state_dict<'a>(keys: impl IntoIterator<Item = &'a str>) -> bool {
    keys.into_iter()
        .any(|k| k.contains(".weight_fake_quant.") || k.contains(".activation_post_process."))
}

/// The QAT qconfig torchvision prepares a MobileNetV3 with for `engine`
/// (`get_default_qat_qconfig(backend)`: `qnnpack` per-tensor, `x86` per-channel).
fn qat_qconfig(engine: Engine) -> QConfig {
    QConfig::default_qat(match engine {
        Engine::Qnnpack => QuantBackend::Qnnpack,
        Engine::X86 => QuantBackend::X86,
    })
}

/// Builds a [`MobileNetV3`] from `config` and loads torchvision's int8 MobileNetV3 at `path`,
/// converted for `engine`, whichever form the file has (told apart by its keys, see
/// [`is_qat_state_dict`]):
///
/// - a converted model's `state_dict()` (`quantize=True` without weights, or a model after
///   `convert`): [`load_quantized_mobilenet_v3`];
/// - a QAT model saved before `convert`, as torchvision's official
///   `mobilenet_v3_large_qnnpack-5bcacf28.pth`: torchvision's own route,
///   [`load_qat_mobilenet_v3`] with `get_default_qat_qconfig` of `engine`'s backend, then
///   [`convert`](crate::convert::convert).
///
/// Either way the model comes back converted, to run with [`forward_int8`](crate::nn::ImageClassifier::forward_int8).
pub fn load_any_int8_mobilenet_v3(
    path: &Path,
    config: &MobileNetV3Config,
    engine: Engine,
    device: &Device,
) -> Result<MobileNetV3> {
    // The keys alone tell the forms apart: no tensor data is read twice.
    let keys = read_state_dict_keys(path)?;
    if !is_qat_state_dict(keys.iter().map(String::as_str)) {
        return load_quantized_mobilenet_v3(path, config, engine, device);
    }
    let mut model = load_qat_mobilenet_v3(path, config, qat_qconfig(engine), device)?;
    crate::convert::convert(&mut model, engine).map_err(|e| e.at_path(path))?;
    Ok(model)
}

impl TorchvisionConfig for MobileNetV3Config {
    type Model = MobileNetV3;
}

impl TorchvisionModel for MobileNetV3 {
    type Config = MobileNetV3Config;
    const FAMILY: Family = Family::MobileNetV3;
    const DEFAULT_BACKEND: QuantBackend = QuantBackend::Qnnpack;

    fn arch_config(arch: Arch, options: &ArchOptions) -> Result<MobileNetV3Config> {
        options.refuse_width_mult(arch)?;
        let config = match arch {
            Arch::MobileNetV3Large => MobileNetV3Config::large(),
            Arch::MobileNetV3Small => MobileNetV3Config::small(),
            _ => return Err(Error::Config(format!("--arch {arch} is not a MobileNetV3"))),
        };
        Ok(config.with_num_classes(options.num_classes()))
    }

    /// Large or small at width 1.0 without the reduced tail or dilation (torchvision's
    /// builders' defaults), whatever the dropout.
    fn config_arch(config: &MobileNetV3Config) -> Option<Arch> {
        let plain = config.width_mult == 1.0 && !config.reduced_tail && !config.dilated;
        plain.then_some(match config.arch {
            MobileNetV3Arch::Large => Arch::MobileNetV3Large,
            MobileNetV3Arch::Small => Arch::MobileNetV3Small,
        })
    }

    fn check_config(config: &MobileNetV3Config) -> Result<()> {
        config.validate()
    }

    fn check_forward_size(config: &MobileNetV3Config, n: usize, h: usize, w: usize) -> Result<()> {
        config.check_forward_size(n, h, w, false)
    }

    fn config_num_classes(config: &MobileNetV3Config) -> usize {
        config.num_classes
    }

    fn build(config: &MobileNetV3Config, device: &Device) -> Result<Self> {
        config.init(device)
    }

    fn load_torchvision(path: &Path, config: &MobileNetV3Config, device: &Device) -> Result<Self> {
        load_mobilenet_v3(path, config, device)
    }

    /// Either int8 form torchvision has (see [`load_any_int8_mobilenet_v3`]).
    fn load_torchvision_int8(
        path: &Path,
        config: &MobileNetV3Config,
        engine: Engine,
        device: &Device,
    ) -> Result<Self> {
        load_any_int8_mobilenet_v3(path, config, engine, device)
    }

    fn check_batch_shape(shape: &[usize]) -> Result<()> {
        MobileNetV3::check_input_shape(shape)
    }

    fn num_classes(&self) -> usize {
        MobileNetV3::num_classes(self)
    }

    fn fuse_model(&mut self, is_qat: Option<bool>) -> Result<()> {
        MobileNetV3::fuse_model(self, is_qat)
    }
}
