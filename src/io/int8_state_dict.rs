//! The state dict of a converted (int8) model, named and laid out as PyTorch's converted modules
//! name theirs ([`crate::state::entries`]). Paths are the model's module paths
//! (`blocks.3.depthwise`); torchvision's names are mapped onto them by
//! [`crate::models::torchvision`]. Each layer writes and reads its own entries
//! ([`QuantLayer::int8_state`](crate::nn::QuantLayer::int8_state)); these are the walks.
//!
//! [`int8_state_dict`] reads it off a converted model; [`load_int8_state_dict`] gives an
//! unconverted model of the same architecture its int8 form from one (strict: missing,
//! unexpected and mis-shaped entries are errors naming the entry).

use std::collections::BTreeSet;

use crate::convert::{build_int8, check_converted};
use crate::int8::Engine;
use crate::nn::Quantizable;
use crate::state::Entries;
pub use crate::state::StateDict;
use crate::{Error, Result};

/// The state dict of a converted model. Errors if a layer has no int8 form.
pub fn int8_state_dict<M: Quantizable>(model: &M) -> Result<StateDict> {
    check_converted(model)?;
    let mut state = StateDict::new();
    model.visit_layers_ref(&mut |path, layer| {
        layer
            .int8_state(path, &mut state)
            .map_err(|e| e.at_layer(path))
    })?;
    Ok(state)
}

/// Gives every quantizable layer of `model` its int8 form from `state` (the model's own
/// architecture, unconverted or converted; its float parameters are not used), running with
/// `engine`'s arithmetic. Strict: a missing, unexpected or mis-shaped entry is an error that
/// names it, and on error the model is unchanged.
pub fn load_int8_state_dict<M: Quantizable + Clone>(
    model: &mut M,
    state: &StateDict,
    engine: Engine,
) -> Result<()> {
    // Entries the model has no place for are an error before anything is built.
    let mut expected = BTreeSet::new();
    model.visit_layers_ref(&mut |path, layer| {
        let keys = layer.int8_state_keys().iter();
        expected.extend(keys.map(|key| crate::nn::quantizable::join_path(path, key)));
        Ok(())
    })?;
    let unexpected: Vec<&str> = state
        .keys()
        .map(String::as_str)
        .filter(|k| !expected.contains(*k))
        .collect();
    if !unexpected.is_empty() {
        let hint = if unexpected.iter().any(|k| k.ends_with("running_mean")) {
            " (batch-norm statistics: this looks like a float checkpoint, not an int8 one)"
        } else {
            ""
        };
        let more = match unexpected.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        return Err(Error::mismatch(format!(
            "the int8 checkpoint has entries the model does not: {}{more}{hint}",
            unexpected[..unexpected.len().min(5)].join(", ")
        )));
    }
    let entries = Entries::new(state);
    build_int8(model, |path, layer, input| {
        layer.load_int8_state(path, &entries, input, engine)
    })
}
