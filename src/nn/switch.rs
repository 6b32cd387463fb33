//! A saved on/off switch of a module: the QAT switches (`observer_enabled`,
//! `fake_quant_enabled`, a batch norm's `freeze_bn`) that must survive a save and load, as
//! PyTorch's `FakeQuantize` keeps its switches in uint8 buffers of its state dict.
//!
//! Burn saves neither plain `bool` fields nor `Param<Flag>` values (flags are runtime
//! configuration: a record leaves them out and loading keeps the destination's), and
//! `RunningState` values are shared by a module's clones (the stage drivers work on a copy,
//! `quantize::on_copy`, and evaluation switches observers off on one). A [`Switch`] is a
//! one-element integer tensor parameter (`1` on, `0` off, in the device's integer dtype): saved
//! and loaded with the record under its field's name, never trained (no gradient, no optimizer
//! state), and a clone's value is its own — setting one replaces that clone's tensor only.
//!
//! Reading a switch reads one integer from the device (like the fake-quant's qparams, which
//! the forward pass reads too).

use burn::module::{Param, ParamId};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// A saved, unshared on/off switch (see the [module docs](self)).
pub type Switch = Param<Tensor<1, Int>>;

/// A switch in state `on`, on `device`.
pub fn switch(on: bool, device: &Device) -> Switch {
    Param::initialized(ParamId::new(), value(on, device))
}

/// Whether `switch` is on.
pub fn is_on(switch: &Switch) -> bool {
    let data = switch.val().into_data();
    data.iter::<i64>().next().is_some_and(|v| v != 0)
}

/// Sets `switch` to `on` (its parameter id and device kept).
pub fn set(switch: &mut Switch, on: bool) {
    let tensor = value(on, &switch.val().device());
    *switch = Param::initialized(switch.id, tensor);
}

/// The record names the crate's switches have: `observer_enabled`, `fake_quant_enabled`
/// (every fake-quant) and `freeze_bn` (a QAT batch norm).
pub const SWITCH_NAMES: [&str; 3] = ["observer_enabled", "fake_quant_enabled", "freeze_bn"];

/// Whether the record entry at `path` is a switch (its last segment one of
/// [`SWITCH_NAMES`]): what checkpoints written before switches were saved lack.
pub fn is_switch_entry(path: &str) -> bool {
    let name = path.rsplit('.').next().unwrap_or(path);
    SWITCH_NAMES.contains(&name)
}

fn value(on: bool, device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::from([i64::from(on)]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_set_apart_leaves_the_original() {
        let device = Device::flex().autodiff();
        let original = switch(true, &device);
        let mut copy = original.clone();
        set(&mut copy, false);
        assert!(is_on(&original));
        assert!(!is_on(&copy));
        assert_eq!(copy.id, original.id);
        set(&mut copy, true);
        assert!(is_on(&copy));
    }

    #[test]
    fn switch_entries_are_named_by_their_last_segment() {
        assert!(is_switch_entry(
            "blocks.0.depthwise.weight_fake_quant.observer_enabled"
        ));
        assert!(is_switch_entry("stem.post.fake_quant_enabled"));
        assert!(is_switch_entry("stem.bn.freeze_bn"));
        assert!(!is_switch_entry("stem.bn.running_mean"));
        assert!(!is_switch_entry("stem.bn.not_freeze_bn"));
    }
}
