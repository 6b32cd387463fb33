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
//! The training path asks a switch on every forward pass, so each [`Switch`] keeps a host copy
//! of its value beside the tensor: asking reads nothing from the device (on a GPU a read waits
//! for every queued kernel). The copy is set with the tensor by [`switch`] and [`set`]; a record
//! loaded into the switch (Burn's record loading calls the parameter's load mapper) marks every
//! copy of the switch stale, and each one reads its own tensor once, on its next [`is_on`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
    Param, ParamId,
};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// A saved, unshared on/off switch with a host copy of its value (see the [module docs](self)).
/// Its record is the one-element integer tensor itself, under the field's name.
#[derive(Debug)]
pub struct Switch {
    /// The saved value (`1` on, `0` off).
    param: Param<Tensor<1, Int>>,
    /// The host copy: `0` off, `1` on.
    on: AtomicU8,
    /// The load count the host copy was taken at.
    seen: AtomicU64,
    /// Records loaded into the parameter so far (shared by the switch's clones and the
    /// parameter's load mapper).
    loads: Arc<AtomicU64>,
}

impl Clone for Switch {
    fn clone(&self) -> Self {
        Switch {
            param: self.param.clone(),
            on: AtomicU8::new(self.on.load(Ordering::Relaxed)),
            seen: AtomicU64::new(self.seen.load(Ordering::Relaxed)),
            loads: self.loads.clone(),
        }
    }
}

impl Switch {
    fn new(param: Param<Tensor<1, Int>>, on: bool) -> Self {
        let loads = Arc::new(AtomicU64::new(0));
        let counter = loads.clone();
        let param = param.load_mapper(move |t| {
            counter.fetch_add(1, Ordering::Relaxed);
            t
        });
        Switch {
            param,
            on: AtomicU8::new(u8::from(on)),
            seen: AtomicU64::new(0),
            loads,
        }
    }

    /// The parameter id (kept by [`set`]).
    pub fn id(&self) -> ParamId {
        self.param.id
    }

    /// The saved tensor (`[1]`, `1` on, `0` off).
    pub fn val(&self) -> Tensor<1, Int> {
        self.param.val()
    }

    /// The host copy, first refreshed from the tensor if a record was loaded since it was taken.
    fn value(&self) -> bool {
        let loads = self.loads.load(Ordering::Relaxed);
        if self.seen.load(Ordering::Relaxed) == loads {
            return self.on.load(Ordering::Relaxed) == 1;
        }
        let data = super::host_read::read(self.param.val());
        let on = data.iter::<i64>().next().is_some_and(|v| v != 0);
        self.on.store(u8::from(on), Ordering::Relaxed);
        self.seen.store(loads, Ordering::Relaxed);
        on
    }

    /// This switch with another tensor of the same value.
    fn with_param(&self, param: Param<Tensor<1, Int>>) -> Self {
        Switch {
            param,
            ..self.clone()
        }
    }
}

impl Module for Switch {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.param.collect_devices(devices)
    }

    fn fork(self, device: &Device) -> Self {
        self.with_param(self.param.clone().fork(device))
    }

    fn to_device(self, device: &Device) -> Self {
        self.with_param(self.param.clone().to_device(device))
    }

    fn train(self) -> Self {
        self.with_param(self.param.clone().train())
    }

    fn valid(&self) -> Self {
        self.with_param(self.param.valid())
    }

    fn materialize(self) -> Self {
        self.with_param(self.param.clone().materialize())
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.param.visit(visitor)
    }

    /// A loading mapper replaces the tensor and bumps the load count through the parameter's
    /// load mapper; any other leaves the value as it was.
    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        self.with_param(Module::map(self.param.clone(), mapper))
    }
}

impl ModuleDisplayDefault for Switch {
    fn content(&self, content: Content) -> Option<Content> {
        self.param.content(content)
    }
}

impl ModuleDisplay for Switch {}

/// A switch in state `on`, on `device`.
pub fn switch(on: bool, device: &Device) -> Switch {
    Switch::new(Param::initialized(ParamId::new(), value(on, device)), on)
}

/// Whether `switch` is on (its host copy: no device read, see the [module docs](self)).
pub fn is_on(switch: &Switch) -> bool {
    switch.value()
}

/// Sets `switch` to `on` (its parameter id and device kept).
pub fn set(switch: &mut Switch, on: bool) {
    let tensor = value(on, &switch.param.val().device());
    *switch = Switch::new(Param::initialized(switch.param.id, tensor), on);
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
        assert_eq!(copy.id(), original.id());
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
