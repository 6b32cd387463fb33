//! Batch inference from and to `.npy` files, the library side of `burn-qat infer`, and the
//! checkpoint loading that `infer`, `export` and `bench` share. Every function is generic over
//! the model family through its configuration ([`TorchvisionConfig`]): a `MobileNetV2Config`
//! loads a MobileNetV2, a `ResNetConfig` a ResNet.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::int8::Engine;
use crate::io::{load_int8_model, looks_like_safetensors, npy};
use crate::models::torchvision_model::explain_mismatch;
use crate::models::{TorchvisionConfig, TorchvisionModel};
use crate::{Error, Result};

/// Images per forward pass, to bound memory on large inputs.
const CHUNK: usize = 32;

/// Which weights a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsKind {
    /// A torchvision float state dict (`.pth`).
    Float,
    /// An int8 model: torchvision's converted state dict (`.pth`), run with this engine, or
    /// this crate's int8 format (whose engine is in the file; the one given here is ignored).
    Int8(Engine),
}

/// Loads the model `config` builds from `weights`; `Int8` models come back converted. A
/// checkpoint of another architecture is an error saying which it is.
pub fn load_weights<C: TorchvisionConfig>(
    weights: &Path,
    config: &C,
    kind: WeightsKind,
    device: &Device,
) -> Result<C::Model> {
    load_weights_with_engine(weights, config, kind, device).map(|(model, _)| model)
}

/// [`load_weights`], also returning the engine an int8 model actually runs with (`None` for a
/// float model): the crate's own int8 files name theirs, which overrides the one in `kind`, and
/// a report (`burn-qat bench`) must name the arithmetic that was timed.
pub fn load_weights_with_engine<C: TorchvisionConfig>(
    weights: &Path,
    config: &C,
    kind: WeightsKind,
    device: &Device,
) -> Result<(C::Model, Option<Engine>)> {
    let loaded = match kind {
        WeightsKind::Float => {
            C::Model::load_torchvision(weights, config, device).map(|m| (m, None))
        }
        WeightsKind::Int8(_) if looks_like_safetensors(weights) => {
            let mut model = C::Model::build(config, device)?;
            crate::quantize::replace_relu(&mut model)?;
            load_int8_model(&mut model, weights).map(|engine| (model, Some(engine)))
        }
        WeightsKind::Int8(engine) => {
            C::Model::load_torchvision_int8(weights, config, engine, device)
                .map(|m| (m, Some(engine)))
        }
    };
    loaded.map_err(|e| explain_mismatch::<C::Model>(e, weights, config))
}

/// Runs a checkpoint of the model `config` builds (float, or int8 on the int8 kernels) on a float32 NCHW `.npy`
/// batch and writes the float32 `[N, num_classes]` logits (dequantized for int8) to `output`.
/// Returns the output shape.
///
/// The input is checked before the weights are read, and the output is written atomically, so a
/// failure leaves no partial file.
pub fn infer_npy<C: TorchvisionConfig>(
    weights: &Path,
    config: &C,
    kind: WeightsKind,
    input: &Path,
    output: &Path,
    device: &Device,
) -> Result<[usize; 2]> {
    let x = npy::read_f32(input)?;
    C::Model::check_batch_shape(&x.shape).map_err(|e| match e {
        Error::Shape(reason) => Error::Npy {
            path: input.to_path_buf(),
            reason,
        },
        other => other,
    })?;
    if let [n, _, h, w] = x.shape[..] {
        C::Model::check_forward_size(config, n.min(CHUNK), h, w)
            .map_err(|e| e.for_flags(format_args!("--input {}", input.display())))?;
    }
    let model = load_weights(weights, config, kind, device)?;
    let logits = predict(
        &model,
        &x.data,
        &x.shape,
        kind != WeightsKind::Float,
        device,
    )?;
    let shape = [x.shape[0], C::Model::config_num_classes(config)];
    npy::write_f32(output, &logits, &shape)?;
    Ok(shape)
}

/// Logits of a flat NCHW batch of checked shape, computed in chunks of `CHUNK` images, by the
/// float forward or (`int8`) the converted model's int8 forward.
pub fn predict<M: TorchvisionModel>(
    model: &M,
    data: &[f32],
    shape: &[usize],
    int8: bool,
    device: &Device,
) -> Result<Vec<f32>> {
    let image: usize = shape[1..].iter().product();
    let mut logits = Vec::with_capacity(shape[0] * TorchvisionModel::num_classes(model));
    for chunk in data.chunks(CHUNK * image) {
        let n = chunk.len() / image;
        let x = Tensor::<4>::from_data(
            TensorData::new(chunk.to_vec(), [n, shape[1], shape[2], shape[3]]),
            device,
        );
        let y = if int8 {
            model.forward_int8(x)?
        } else {
            model.forward(x)
        };
        logits.extend(y.into_data().convert::<f32>().iter::<f32>());
    }
    Ok(logits)
}
