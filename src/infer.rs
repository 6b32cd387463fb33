//! Batch inference from and to `.npy` files, the library side of `burn-qat infer`.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::io::npy;
use crate::models::{MobileNetV2, MobileNetV2Config, load_mobilenet_v2};
use crate::{Error, Result};

/// Images per forward pass, to bound memory on large inputs.
const CHUNK: usize = 32;

/// Runs a torchvision float MobileNetV2 checkpoint on a float32 NCHW `.npy` batch and writes
/// the float32 `[N, num_classes]` logits to `output`. Returns the output shape.
///
/// The input is checked before the weights are read, and the output is written atomically, so a
/// failure leaves no partial file.
pub fn infer_float_npy(
    weights: &Path,
    config: &MobileNetV2Config,
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
    let model = load_mobilenet_v2(weights, config, device)?;
    let logits = predict(&model, &x.data, &x.shape, device);
    let shape = [x.shape[0], config.num_classes];
    npy::write_f32(output, &logits, &shape)?;
    Ok(shape)
}

/// Logits of a flat NCHW batch of checked shape, computed in chunks of `CHUNK` images.
pub fn predict(model: &MobileNetV2, data: &[f32], shape: &[usize], device: &Device) -> Vec<f32> {
    let image: usize = shape[1..].iter().product();
    let mut logits = Vec::with_capacity(shape[0] * model.num_classes());
    for chunk in data.chunks(CHUNK * image) {
        let n = chunk.len() / image;
        let x = Tensor::<4>::from_data(
            TensorData::new(chunk.to_vec(), [n, shape[1], shape[2], shape[3]]),
            device,
        );
        let y = model.forward(x).into_data().convert::<f32>();
        logits.extend(y.iter::<f32>());
    }
    logits
}
