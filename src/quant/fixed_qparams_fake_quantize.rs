//! `FixedQParamsFakeQuantize`: fake quantization with scale and zero-point fixed in advance, as
//! PyTorch's `torch.ao.quantization.FixedQParamsFakeQuantize` (torch 2.5.1) with its
//! `FixedQParamsObserver`. Eager `prepare_qat` attaches one to the outputs whose range is known
//! (`_get_special_act_post_process`: `nn.Hardsigmoid` and `nn.Sigmoid` get scale 1/256,
//! zero-point 0, quint8 0..255; `nn.Tanh` 2/256, 128), on modules in training mode only.
//!
//! Forward: `y = (clamp(nearbyint(x · (1/scale)) + zp, qmin, qmax) − zp) · scale` while
//! `fake_quant_enabled`, else `y = x`, with the straight-through gradient of
//! [`fake_quantize_per_tensor`]. Nothing is observed: the
//! observer switch is kept only because PyTorch's state dict has it.

use burn::module::{Module, RunningState};
use burn::tensor::{Device, Tensor, TensorData};

use super::functional::fake_quantize_per_tensor;
use super::qparams::QParams;
use crate::state::switch::{self, Switch};

/// PyTorch's `FixedQParamsObserver`: holds the fixed `scale` and `zero_point` (its state-dict
/// entries), observes nothing.
#[derive(Module, Debug)]
pub struct FixedQParamsObserver {
    /// The fixed scale (one value).
    pub scale: RunningState<Tensor<1>>,
    /// The fixed zero-point (one integer value, stored as f32 as the crate's fake-quants do).
    pub zero_point: RunningState<Tensor<1>>,
}

/// Fake quantization with fixed qparams; see the [module docs](self).
///
/// The forward uses the qparams it was built with; the `scale` / `zero_point` entries hold
/// them for the state dict. Record names are PyTorch's: `fake_quant_enabled`, `observer_enabled`, `scale`,
/// `zero_point`, `activation_post_process.scale`, `activation_post_process.zero_point`.
#[derive(Module, Debug)]
pub struct FixedQParamsFakeQuantize {
    /// The observer (PyTorch's attribute name).
    pub activation_post_process: FixedQParamsObserver,
    /// The scale (one value).
    pub scale: RunningState<Tensor<1>>,
    /// The zero-point (one value, f32).
    pub zero_point: RunningState<Tensor<1>>,
    /// Kept for PyTorch's state dict; a fixed-qparams observer records nothing.
    observer_enabled: Switch,
    /// Whether the forward pass fake-quantizes.
    fake_quant_enabled: Switch,
    /// The fixed scale on the host.
    #[module(skip)]
    fixed_scale: f32,
    /// The fixed zero-point on the host.
    #[module(skip)]
    fixed_zero_point: i64,
    /// `quant_min`.
    #[module(skip)]
    quant_min: i64,
    /// `quant_max`.
    #[module(skip)]
    quant_max: i64,
}

impl FixedQParamsFakeQuantize {
    /// PyTorch's `default_fixed_qparams_range_0to1_fake_quant`: scale `1/256`, zero-point 0,
    /// quint8 `[0, 255]` (hardsigmoid and sigmoid outputs), both switches on.
    pub fn range_0to1(device: &Device) -> Self {
        Self::new(1.0 / 256.0, 0, (0, 255), device)
    }

    /// A fixed-qparams fake-quant of `scale`, `zero_point` and integer range `(qmin, qmax)`,
    /// both switches on.
    pub fn new(scale: f32, zero_point: i64, range: (i64, i64), device: &Device) -> Self {
        let state = |v: f32| RunningState::new(Tensor::from_data(TensorData::from([v]), device));
        FixedQParamsFakeQuantize {
            activation_post_process: FixedQParamsObserver {
                scale: state(scale),
                zero_point: state(zero_point as f32),
            },
            scale: state(scale),
            zero_point: state(zero_point as f32),
            observer_enabled: switch::switch(true, device),
            fake_quant_enabled: switch::switch(true, device),
            fixed_scale: scale,
            fixed_zero_point: zero_point,
            quant_min: range.0,
            quant_max: range.1,
        }
    }

    /// Fake-quantizes `x` with the fixed qparams while fake quantization is on.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if !self.fake_quant_enabled() {
            return x;
        }
        fake_quantize_per_tensor(
            x,
            self.fixed_scale,
            self.fixed_zero_point,
            self.quant_min,
            self.quant_max,
        )
    }

    /// The fixed qparams (`calculate_qparams`).
    pub fn calculate_qparams(&self) -> QParams {
        QParams {
            scale: vec![self.fixed_scale],
            zero_point: vec![self.fixed_zero_point],
        }
    }

    /// `(quant_min, quant_max)`.
    pub fn quant_range(&self) -> (i64, i64) {
        (self.quant_min, self.quant_max)
    }

    /// Turns fake quantization on (`enable_fake_quant`).
    pub fn enable_fake_quant(&mut self) {
        switch::set(&mut self.fake_quant_enabled, true);
    }

    /// Turns fake quantization off (`disable_fake_quant`): the forward pass is the identity.
    pub fn disable_fake_quant(&mut self) {
        switch::set(&mut self.fake_quant_enabled, false);
    }

    /// Sets the observer switch (`enable_observer` / `disable_observer`); nothing is observed
    /// either way.
    pub fn set_observer(&mut self, on: bool) {
        switch::set(&mut self.observer_enabled, on);
    }

    /// Whether fake quantization is on.
    pub fn fake_quant_enabled(&self) -> bool {
        switch::is_on(&self.fake_quant_enabled)
    }

    /// Whether the observer switch is on.
    pub fn observer_enabled(&self) -> bool {
        switch::is_on(&self.observer_enabled)
    }
}
