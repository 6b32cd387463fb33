//! torchvision checkpoints, one file per family: the state-dict key layouts of
//! `torchvision.models.<family>()` (float) and of their `torchvision.models.quantization`
//! counterparts with `quantize=True` (int8, after `convert`), and loading either `.pth` file
//! into the Burn model. This file holds what every family shares: renaming an int8 state dict
//! and loading it into the model's int8 layers.

use std::path::Path;

use crate::int8::Engine;
use crate::io::{KeyMap, StateDict, StateValue, load_int8_state_dict, read_quantized_state_dict};
use crate::{Error, Result};

pub mod mobilenet_v2;
pub mod mobilenet_v3;
pub mod resnet;
pub mod shufflenet_v2;

pub use mobilenet_v2::{
    load_mobilenet_v2, load_quantized_mobilenet_v2, mobilenet_v2_key_map,
    quantized_mobilenet_v2_key_map,
};
pub use mobilenet_v3::{
    is_qat_state_dict, load_any_int8_mobilenet_v3, load_mobilenet_v3, load_qat_mobilenet_v3,
    load_quantized_mobilenet_v3, mobilenet_v3_key_map, qat_mobilenet_v3_key_map,
    quantized_mobilenet_v3_key_map,
};
pub use resnet::{load_quantized_resnet, load_resnet, quantized_resnet_key_map, resnet_key_map};
pub use shufflenet_v2::{
    load_quantized_shufflenet_v2, load_shufflenet_v2, quantized_shufflenet_v2_key_map,
    shufflenet_v2_key_map,
};

/// torchvision's int8 state dict renamed to this crate's paths, with quantized linear layers'
/// packed `(weight, bias)` tuples unpacked into `weight` / `bias` entries.
pub(crate) fn rename_quantized_state(state: StateDict, map: &KeyMap) -> Result<StateDict> {
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

/// Reads torchvision's int8 state dict at `path` into `model`'s int8 layers (ReLU6 replaced by
/// ReLU first, as torchvision's quantizable models do), errors naming the torchvision key.
pub(crate) fn load_quantized<M: crate::nn::Quantizable + Clone>(
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

/// An error about this crate's paths, told with torchvision's keys.
pub(crate) fn rename_back(error: Error, map: &KeyMap) -> Error {
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
