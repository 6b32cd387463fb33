//! Batch inference from and to `.npy` files, the library side of `burn-qat infer`, and the
//! checkpoint loading that `infer`, `export` and `bench` share.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::int8::Engine;
use crate::io::{load_int8_model, looks_like_safetensors, npy};
use crate::models::{
    MobileNetV2, MobileNetV2Config, load_mobilenet_v2, load_quantized_mobilenet_v2,
};
use crate::{Error, Result};

/// Images per forward pass, to bound memory on large inputs.
const CHUNK: usize = 32;

/// Which weights a MobileNetV2 file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsKind {
    /// A torchvision float state dict (`.pth`).
    Float,
    /// An int8 model: torchvision's converted state dict (`.pth`), run with this engine, or
    /// this crate's int8 format (whose engine is in the file; the one given here is ignored).
    Int8(Engine),
}

/// Loads a MobileNetV2 of `config` from `weights`; `Int8` models come back converted.
pub fn load_weights(
    weights: &Path,
    config: &MobileNetV2Config,
    kind: WeightsKind,
    device: &Device,
) -> Result<MobileNetV2> {
    load_weights_with_engine(weights, config, kind, device).map(|(model, _)| model)
}

/// [`load_weights`], also returning the engine an int8 model actually runs with (`None` for a
/// float model): the crate's own int8 files name theirs, which overrides the one in `kind`, and
/// a report (`burn-qat bench`) must name the arithmetic that was timed.
pub fn load_weights_with_engine(
    weights: &Path,
    config: &MobileNetV2Config,
    kind: WeightsKind,
    device: &Device,
) -> Result<(MobileNetV2, Option<Engine>)> {
    match kind {
        WeightsKind::Float => Ok((load_mobilenet_v2(weights, config, device)?, None)),
        WeightsKind::Int8(_) if looks_like_safetensors(weights) => {
            let mut model = config.init(device)?;
            crate::quantize::replace_relu(&mut model)?;
            let engine = load_int8_model(&mut model, weights)?;
            Ok((model, Some(engine)))
        }
        WeightsKind::Int8(engine) => Ok((
            load_quantized_mobilenet_v2(weights, config, engine, device)?,
            Some(engine),
        )),
    }
}

/// Runs a MobileNetV2 checkpoint (float, or int8 on the int8 kernels) on a float32 NCHW `.npy`
/// batch and writes the float32 `[N, num_classes]` logits (dequantized for int8) to `output`.
/// Returns the output shape.
///
/// The input is checked before the weights are read, and the output is written atomically, so a
/// failure leaves no partial file.
pub fn infer_npy(
    weights: &Path,
    config: &MobileNetV2Config,
    kind: WeightsKind,
    input: &Path,
    output: &Path,
    device: &Device,
) -> Result<[usize; 2]> {
    let x = npy::read_f32(input)?;
    MobileNetV2::check_input_shape(&x.shape).map_err(|e| match e {
        Error::Shape(reason) => Error::Npy {
            path: input.to_path_buf(),
            reason,
        },
        other => other,
    })?;
    if let [n, _, h, w] = x.shape[..] {
        config
            .check_forward_size(n.min(CHUNK), h, w, false)
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
    let shape = [x.shape[0], config.num_classes];
    npy::write_f32(output, &logits, &shape)?;
    Ok(shape)
}

/// Logits of a flat NCHW batch of checked shape, computed in chunks of `CHUNK` images, by the
/// float forward or (`int8`) the converted model's int8 forward.
pub fn predict(
    model: &MobileNetV2,
    data: &[f32],
    shape: &[usize],
    int8: bool,
    device: &Device,
) -> Result<Vec<f32>> {
    let image: usize = shape[1..].iter().product();
    let mut logits = Vec::with_capacity(shape[0] * model.num_classes());
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
