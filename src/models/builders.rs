//! Builders shaped like torchvision's `torchvision.models.quantization` ones:
//! `resnet18(weights, progress, quantize)` and the others, and MobileNetV2's classic
//! `mobilenet_v2(pretrained, progress, quantize)`. All are [`build`]: what torchvision's
//! `_resnet` / `mobilenet_v2` do, in the same order, for any family.

use burn::tensor::Device;

use super::ArchOptions;
use super::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use super::mobilenet_v3::MobileNetV3;
use super::pretrained::fetch_weights;
use super::quantize_model::quantize_model;
use super::resnet::ResNet;
use super::shufflenet_v2::ShuffleNetV2;
use super::torchvision_model::TorchvisionModel;
use super::weights::{
    MobileNetV2Weights, MobileNetV3LargeWeights, MobileNetV3SmallWeights, ResNeXt101_32x8dWeights,
    ResNeXt101_64x4dWeights, ResNet18Weights, ResNet50Weights, ShuffleNetV2x0_5Weights,
    ShuffleNetV2x1_0Weights, ShuffleNetV2x1_5Weights, ShuffleNetV2x2_0Weights, Weights,
};
use crate::int8::Engine;
use crate::{Error, Result};

type ConfigOf<W> = <<W as Weights>::Model as TorchvisionModel>::Config;

/// torchvision's quantizable builder for `W`'s architecture, on `config` (its `**kwargs`):
///
/// - with `weights`: the classifier must have their 1000 classes (torchvision's
///   `_ovewrite_named_param`), and `quantize` must match them (int8 weights with `quantize`,
///   float ones without, as torchvision's `verify` requires);
/// - the model is built and `_replace_relu` applied (ReLU6 → ReLU), as torchvision's builders
///   do, with or without `quantize`;
/// - `quantize` with int8 weights: the checkpoint is downloaded (cached; progress bar on stderr
///   when `progress`) and loaded into the int8 layers, for the backend it was made for
///   (MobileNetV3's official checkpoint is a QAT state dict: loaded after `prepare_qat` and
///   converted, as torchvision does);
/// - `quantize` without weights: [`quantize_model`] with the family's default backend
///   (`fbgemm` for ResNet and ShuffleNetV2, `qnnpack` for the MobileNets): a converted model of
///   random weights. For MobileNetV3 this is not torchvision's route: its builder prepares the
///   random model for QAT and converts it uncalibrated, every activation at scale 1 (all-zero
///   logits); the issue asks for `quantize_model` here, a usable model;
/// - float weights: downloaded (cached) and loaded.
///
/// A quantized model runs with `forward_int8` on the CPU.
pub fn build<W: Weights>(
    weights: Option<W>,
    progress: bool,
    quantize: bool,
    config: &ConfigOf<W>,
    device: &Device,
) -> Result<W::Model> {
    let info = weights.map(W::info);
    if let Some(info) = &info {
        let int8 = info.backend.is_some();
        if int8 != quantize {
            let (what, with) = match int8 {
                true => ("int8", "with quantize = true"),
                false => ("float", "without quantize"),
            };
            return Err(Error::Config(format!(
                "{} are {what} weights: use them {with}",
                info.name
            )));
        }
        let classes = W::Model::config_num_classes(config);
        if classes != info.num_classes() {
            return Err(Error::Config(format!(
                "{} have {} classes, the configuration {classes}",
                info.name,
                info.num_classes()
            )));
        }
    }
    W::Model::check_config(config)?;
    let backend = info
        .and_then(|i| i.backend)
        .unwrap_or(W::Model::DEFAULT_BACKEND);
    let mut model = match &info {
        Some(info) if quantize => {
            let path = fetch_weights(info, progress)?;
            let engine = Engine::from_backend(backend)?;
            return W::Model::load_torchvision_int8(&path, config, engine, device);
        }
        Some(info) => W::Model::load_torchvision(&fetch_weights(info, progress)?, config, device)?,
        None => W::Model::build(config, device)?,
    };
    crate::quantize::replace_relu(&mut model)?;
    if quantize {
        quantize_model(&mut model, backend, device)?;
    }
    Ok(model)
}

/// `W`'s architecture's configuration with torchvision's defaults (1000 classes).
fn default_config<W: Weights>() -> Result<ConfigOf<W>> {
    W::Model::arch_config(W::ARCH, &ArchOptions::default())
}

/// One builder per architecture: `name(weights, progress, quantize, device)`.
macro_rules! builders {
    ($($(#[$doc:meta])* $name:ident($weights:ty) -> $model:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(
            weights: Option<$weights>,
            progress: bool,
            quantize: bool,
            device: &Device,
        ) -> Result<$model> {
            build(weights, progress, quantize, &default_config::<$weights>()?, device)
        }
    )*};
}

builders! {
    /// torchvision's `quantization.resnet18(weights, progress, quantize)`.
    resnet18(ResNet18Weights) -> ResNet;
    /// torchvision's `quantization.resnet50(weights, progress, quantize)`.
    resnet50(ResNet50Weights) -> ResNet;
    /// torchvision's `quantization.resnext101_32x8d(weights, progress, quantize)`.
    resnext101_32x8d(ResNeXt101_32x8dWeights) -> ResNet;
    /// torchvision's `quantization.resnext101_64x4d(weights, progress, quantize)`.
    resnext101_64x4d(ResNeXt101_64x4dWeights) -> ResNet;
    /// torchvision's `quantization.mobilenet_v3_large(weights, progress, quantize)`.
    mobilenet_v3_large(MobileNetV3LargeWeights) -> MobileNetV3;
    /// `mobilenet_v3_small(weights, progress, quantize)` through the same quantizable model
    /// (torchvision's `quantization` module has no such builder, nor int8 weights for it;
    /// `quantize` without weights runs [`quantize_model`]).
    mobilenet_v3_small(MobileNetV3SmallWeights) -> MobileNetV3;
    /// torchvision's `quantization.shufflenet_v2_x0_5(weights, progress, quantize)`.
    shufflenet_v2_x0_5(ShuffleNetV2x0_5Weights) -> ShuffleNetV2;
    /// torchvision's `quantization.shufflenet_v2_x1_0(weights, progress, quantize)`.
    shufflenet_v2_x1_0(ShuffleNetV2x1_0Weights) -> ShuffleNetV2;
    /// torchvision's `quantization.shufflenet_v2_x1_5(weights, progress, quantize)`.
    shufflenet_v2_x1_5(ShuffleNetV2x1_5Weights) -> ShuffleNetV2;
    /// torchvision's `quantization.shufflenet_v2_x2_0(weights, progress, quantize)`.
    shufflenet_v2_x2_0(ShuffleNetV2x2_0Weights) -> ShuffleNetV2;
}

/// torchvision's classic `quantization.mobilenet_v2(pretrained, progress, quantize, **kwargs)`:
/// `pretrained` means `IMAGENET1K_V1` (float) or, with `quantize`, `IMAGENET1K_QNNPACK_V1`
/// (int8, qnnpack), both for width 1.0 and 1000 classes; `config` holds the kwargs. ReLU6 is
/// replaced by ReLU in every case, as torchvision's quantizable builder does. See [`build`].
pub fn mobilenet_v2(
    pretrained: bool,
    progress: bool,
    quantize: bool,
    config: &MobileNetV2Config,
    device: &Device,
) -> Result<MobileNetV2> {
    let weights = pretrained.then_some(match quantize {
        true => MobileNetV2Weights::LEGACY_INT8,
        false => MobileNetV2Weights::LEGACY_FLOAT,
    });
    build(weights, progress, quantize, config, device)
}

/// torchvision's `quantization.mobilenet_v2(pretrained=True, quantize=True)`:
/// [`mobilenet_v2`]`(true, progress, true, &MobileNetV2Config::new(), device)`.
pub fn quantized_mobilenet_v2(progress: bool, device: &Device) -> Result<MobileNetV2> {
    mobilenet_v2(true, progress, true, &MobileNetV2Config::new(), device)
}
