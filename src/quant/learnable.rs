//! LSQ inside a qconfig: the learnable part of a [`FakeQuantize`] — trainable scale and
//! zero-point, as PyTorch's `torch.ao.quantization._learnable_fake_quantize._LearnableFakeQuantize`
//! (torch 2.5.1) — and the LSQ fake-quant function both it and the stand-alone
//! [`LearnableFakeQuantize`](super::LearnableFakeQuantize) run.
//!
//! A `FakeQuantize` built from a config with
//! [`learnable`](super::FakeQuantizeConfig::learnable) set maps PyTorch's buffers onto its own
//! switches: `static_enabled` is the observer switch ([`FakeQuantize::disable_observer`] is
//! `toggle_observer_update(False)`), `fake_quant_enabled` the fake-quant switch;
//! `learning_enabled` and the parameters are [`LearnableQParams`]'.
//! PyTorch's forward:
//!
//! ```text
//! static:      observe x; scale, zero_point ← observer.calculate_qparams()   (copied in place)
//! otherwise:   scale ← max(scale, eps)                                       (in place)
//! fake-quant:  symmetric → zero_point ← 0 (in place);
//!              y = _fake_quantize_learnable_per_{tensor,channel}_affine(x, scale, zero_point,
//!                    quant_min, quant_max, grad_factor = 1/√(numel·quant_max) or 1)
//! ```
//!
//! Layers call `forward(&self)`, so the in-place writes become values the forward *uses*: the
//! observer's qparams in static mode (kept in the fake-quant's `scale` / `zero_point` states and
//! copied into the parameters when the observer is switched off, e.g. by
//! [`FakeQuantize::enable_param_learning`]), `max(scale, eps)` in learning mode with the gradient
//! going to the parameter itself, and zero-point 0 for symmetric schemes. Forward values and
//! gradients are PyTorch's. While the observer is on, the parameters keep their values and the
//! static estimate PyTorch would hold in them is in the `scale` / `zero_point` states (saved
//! too, and what [`FakeQuantize::current_qparams`] reports); from the switch on the parameters
//! hold PyTorch's values. Beyond that, what is stored differs from PyTorch's tensors in three
//! corner cases, none of which changes a forward, a gradient or `convert`:
//! - a learned scale below `eps` (1.19e-7) stays stored as is (PyTorch stores `eps` and steps
//!   from there; here the next steps start from the stored value);
//! - a symmetric scheme's zero-point gets no gradient and stays 0 (PyTorch zeroes it before
//!   each forward and the optimizer then moves it by `-lr·momentum_buffer`, a value no forward
//!   uses: `convert` runs the weight fake-quant first, which zeroes it again);
//! - parameters trained while the observer is on (PyTorch's initial state has `requires_grad`
//!   with `learning_enabled = 0`) are overwritten by the static estimate when the observer is
//!   switched off; PyTorch keeps that estimate minus the last optimizer step. Use
//!   [`FakeQuantize::enable_static_estimate`] (no gradients) for the static phase to avoid it.
//!   Only a static forward since the last copy makes a copy (`static_estimate_pending`, saved
//!   with the model), so a model loaded to resume learning keeps its learned values.

mod device;

use burn::config::Config;
use burn::module::{Module, Param, RunningState};
use burn::tensor::{Bool, Device, Tensor, TensorData};

use super::fake_quantize::FakeQuantize;
use super::functional::{fake_quantize_per_channel, fake_quantize_per_tensor};
use super::observer::{read_state, tensor_to_vec, write_state};
use super::qparams::{QParams, QParamsCalculator};
use super::scheme::QuantDtype;
use crate::state::switch::{self, Switch};
use crate::{Error, Result};

/// Configuration of the learnable part of a [`FakeQuantize`] (the LSQ-specific arguments of
/// `_LearnableFakeQuantize`); see [`FakeQuantizeConfig::learnable`](super::FakeQuantizeConfig).
#[derive(Config, Debug)]
pub struct LearnableQParamsConfig {
    /// `quant_min` of the fake-quant function.
    pub quant_min: i64,
    /// `quant_max` of the fake-quant function.
    pub quant_max: i64,
    /// Initial scale (`scale=1.0`).
    #[config(default = 1.0)]
    pub scale: f64,
    /// Initial zero-point (`zero_point=0.0`).
    #[config(default = 0.0)]
    pub zero_point: f64,
    /// Scale the scale/zero-point gradients by `1/√(numel · quant_max)` (LSQ's `g`).
    #[config(default = false)]
    pub use_grad_scaling: bool,
}

/// Trainable scale and zero-point of a [`FakeQuantize`] (see the [module docs](self)).
///
/// `scale`, `zero_point` (float) and `learning_enabled` (1 or 0, never trained) are saved with
/// the model under PyTorch's names, and `static_estimate_pending` (see
/// [`FakeQuantize::disable_observer`]); `quant_min`, `quant_max` and `use_grad_scaling` come
/// from the qconfig.
#[derive(Module, Debug)]
pub struct LearnableQParams {
    /// Trainable scale(s), one per tensor or per channel.
    pub scale: Param<Tensor<1>>,
    /// Trainable zero-point(s), float.
    pub zero_point: Param<Tensor<1>>,
    /// PyTorch's `learning_enabled` buffer: 1 once [`FakeQuantize::enable_param_learning`] ran.
    pub learning_enabled: Switch,
    /// 1 when a static forward ran since the parameters last took the static estimate: PyTorch
    /// would have copied that estimate into them, so switching the observer off copies it.
    pub static_estimate_pending: RunningState<Tensor<1>>,
    quant_min: i64,
    quant_max: i64,
    use_grad_scaling: bool,
}

/// `torch.finfo(torch.float32).eps`, PyTorch's `eps` buffer.
const EPS: f32 = f32::EPSILON;

impl LearnableQParamsConfig {
    /// Checks the range lies in `dtype`'s and the static estimates use the observer formula
    /// (PyTorch's LSQ calls the observer's `calculate_qparams`).
    pub fn validate(&self, calculator: QParamsCalculator, dtype: QuantDtype) -> Result<()> {
        if calculator != QParamsCalculator::Observer {
            return Err(Error::Config(
                "a learnable (LSQ) fake-quant takes its static estimates from the observer \
                 formula, not the fused one"
                    .into(),
            ));
        }
        let (lo, hi) = dtype.bounds();
        if !(lo <= self.quant_min && self.quant_min < self.quant_max && self.quant_max <= hi) {
            return Err(Error::Config(format!(
                "LSQ quant range [{}, {}] must be increasing and within the {dtype:?} range \
                 [{lo}, {hi}]",
                self.quant_min, self.quant_max
            )));
        }
        Ok(())
    }

    /// `n` scales and zero-points (1 per tensor, or the channel count) on `device`.
    pub fn init(&self, n: usize, device: &Device) -> LearnableQParams {
        let param = |v: f32| Param::from_tensor(filled(v, n, device));
        LearnableQParams {
            scale: param(self.scale as f32),
            zero_point: param(self.zero_point as f32),
            learning_enabled: switch::switch(false, device),
            static_estimate_pending: RunningState::new(filled(0.0, 1, device)),
            quant_min: self.quant_min,
            quant_max: self.quant_max,
            use_grad_scaling: self.use_grad_scaling,
        }
    }
}

fn filled(v: f32, n: usize, device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![v; n], [n]), device)
}

/// Replaces a parameter's values, keeping its id (the optimizer's state follows it) and its
/// gradient setting.
pub(crate) fn set_param(p: &mut Param<Tensor<1>>, values: Vec<f32>) {
    let n = values.len();
    let old = p.clone();
    *p = old.map(|t| {
        let device = t.device();
        let req = t.is_require_grad();
        Tensor::from_data(TensorData::new(values, [n]), &device).set_require_grad(req)
    });
}

/// Writes `static_estimate_pending` and commits it at once: a `RunningState` update waits in a
/// per-thread slot until the next `value_sync`, and saving reads the committed value.
fn set_pending(l: &LearnableQParams, pending: bool) {
    write_state(
        &l.static_estimate_pending,
        vec![f32::from(u8::from(pending))],
    );
    let _ = l.static_estimate_pending.value_sync();
}

/// `max(v, eps)` as PyTorch's `clamp_(min=eps)` (NaN stays NaN).
fn clamp_eps(v: f32) -> f32 {
    if v < EPS { EPS } else { v }
}

impl LearnableQParams {
    /// Whether scale and zero-point are being learned (`learning_enabled`).
    pub fn learning_enabled(&self) -> bool {
        switch::is_on(&self.learning_enabled)
    }

    /// `toggle_qparam_learning`: the flag and whether both parameters require gradients.
    pub fn toggle_learning(&mut self, enabled: bool) {
        switch::set(&mut self.learning_enabled, enabled);
        self.scale = self.scale.clone().set_require_grad(enabled);
        self.zero_point = self.zero_point.clone().set_require_grad(enabled);
    }

    /// `quant_min` / `quant_max` of the fake-quant function.
    pub fn quant_range(&self) -> (i64, i64) {
        (self.quant_min, self.quant_max)
    }

    /// The stored scale(s) and zero-point(s).
    pub fn values(&self) -> (Vec<f32>, Vec<f32>) {
        (
            tensor_to_vec(self.scale.val()),
            tensor_to_vec(self.zero_point.val()),
        )
    }

    /// Writes scale(s) and zero-point(s), keeping the parameters' ids and gradient settings.
    pub fn set_values(&mut self, scale: Vec<f32>, zero_point: Vec<f32>) {
        set_param(&mut self.scale, scale);
        set_param(&mut self.zero_point, zero_point);
    }

    /// `calculate_qparams` of `scale` / `zp`: scale clamped to `eps`, zero-point rounded half to
    /// even and clamped to `[quant_min, quant_max]` (0 for symmetric schemes, which the forward
    /// zeroes).
    fn qparams_of(&self, scale: Vec<f32>, zp: Vec<f32>, symmetric: bool) -> QParams {
        QParams {
            scale: scale.into_iter().map(clamp_eps).collect(),
            zero_point: zp
                .into_iter()
                .map(|z| self.round_zero_point(if symmetric { 0.0 } else { z }) as i64)
                .collect(),
        }
    }

    fn round_zero_point(&self, z: f32) -> f32 {
        z.round_ties_even()
            .clamp(self.quant_min as f32, self.quant_max as f32)
    }

    fn grad_factor(&self, numel: usize) -> f32 {
        grad_factor(self.use_grad_scaling, numel, self.quant_max)
    }
}

/// LSQ's gradient scale as PyTorch computes it: `1.0 / (numel * quant_max) ** 0.5` in f64, then
/// passed as f32; 1 without grad scaling.
pub(crate) fn grad_factor(use_grad_scaling: bool, numel: usize, quant_max: i64) -> f32 {
    if use_grad_scaling {
        (1.0 / ((numel as f64) * quant_max as f64).sqrt()) as f32
    } else {
        1.0
    }
}

impl FakeQuantize {
    /// The learnable part, for an LSQ fake-quant (`None` for the plain `FakeQuantize`).
    pub fn learnable(&self) -> Option<&LearnableQParams> {
        self.learnable.as_ref()
    }

    /// `enable_param_learning`: learn scale and zero-point (starting from the last static
    /// estimate), fake-quant on, observer off. Nothing for a non-learnable fake-quant.
    pub fn enable_param_learning(&mut self) {
        if self.learnable.is_some() {
            self.toggle_qparam_learning(true);
            self.enable_fake_quant();
            self.disable_observer();
        }
    }

    /// `enable_static_estimate`: scale and zero-point from the observer, fake-quant on, nothing
    /// learned. Nothing for a non-learnable fake-quant.
    pub fn enable_static_estimate(&mut self) {
        if self.learnable.is_some() {
            self.toggle_qparam_learning(false);
            self.enable_fake_quant();
            self.enable_observer();
        }
    }

    /// `enable_static_observation`: observe only, the forward is the identity. Nothing for a
    /// non-learnable fake-quant.
    pub fn enable_static_observation(&mut self) {
        if self.learnable.is_some() {
            self.toggle_qparam_learning(false);
            self.disable_fake_quant();
            self.enable_observer();
        }
    }

    /// `toggle_qparam_learning`: whether scale and zero-point require gradients.
    pub fn toggle_qparam_learning(&mut self, enabled: bool) {
        if let Some(l) = self.learnable.as_mut() {
            l.toggle_learning(enabled);
        }
    }

    /// Copies the last static estimate (the `scale` / `zero_point` states) into the learnable
    /// parameters — what PyTorch's static forwards wrote into them in place — when the observer
    /// goes off, if a static forward ran since the last copy (`static_estimate_pending`, saved:
    /// a model loaded to resume learning keeps its learned values, as PyTorch's does).
    pub(super) fn sync_learnable(&mut self) {
        if self.sync_learnable_on_device() {
            return;
        }
        if let Some(l) = self.learnable.as_mut()
            && read_state(&l.static_estimate_pending)[0] != 0.0
        {
            l.set_values(read_state(&self.scale), read_state(&self.zero_point));
            set_pending(l, false);
        }
    }

    /// The learnable fake-quant's qparams as its forward applies them now and as `convert` reads
    /// them (`calculate_qparams`): the static estimate while the observer is on, else the
    /// learned values (see [`LearnableQParams`]).
    pub(super) fn learnable_qparams(&self, l: &LearnableQParams) -> QParams {
        let symmetric = self.activation_post_process.qscheme().is_symmetric();
        let (scale, zp) = if self.observer_enabled() {
            (read_state(&self.scale), read_state(&self.zero_point))
        } else {
            l.values()
        };
        l.qparams_of(scale, zp, symmetric)
    }

    /// The LSQ forward of `x` (see the [module docs](self)).
    pub(super) fn run_learnable<const D: usize>(
        &self,
        l: &LearnableQParams,
        x: Tensor<D>,
        strict: bool,
    ) -> Result<Tensor<D>> {
        if !strict && self.activation_post_process.on_device(&x) {
            return Ok(self.run_learnable_on_device(l, x));
        }
        let obs = &self.activation_post_process;
        let (scale, zp) = if self.observer_enabled() {
            let stats = match self.observe_plain(&x.clone().detach(), strict)? {
                Some(stats) => stats,
                None => obs.stats(),
            };
            let qp = obs.qparams_of(&stats)?;
            self.store(&qp);
            set_pending(l, true);
            let zp = qp.zero_point.iter().map(|&z| z as f32).collect();
            (qp.scale, zp)
        } else {
            let (scale, zp) = l.values();
            (scale.into_iter().map(clamp_eps).collect(), zp)
        };
        if !self.fake_quant_enabled() {
            return Ok(x);
        }
        let symmetric = obs.qscheme().is_symmetric();
        let zp = if symmetric { vec![0.0; zp.len()] } else { zp };
        let args = LsqArgs {
            scale: &scale,
            zero_point: &zp,
            axis: obs.qscheme().is_per_channel().then_some(obs.ch_axis()),
            quant_min: l.quant_min,
            quant_max: l.quant_max,
            grad_factor: l.grad_factor(x.shape().num_elements()),
        };
        // A symmetric zero-point is a constant 0 (module docs): no gradient goes to it.
        let zp_param = (!symmetric).then(|| l.zero_point.val());
        lsq_fake_quant(x, &args, Some(l.scale.val()), zp_param)
    }
}

/// The values one LSQ fake-quant call uses.
pub(crate) struct LsqArgs<'a> {
    /// Scale(s) the forward uses (already clamped to `eps` where PyTorch clamps).
    pub scale: &'a [f32],
    /// Float zero-point(s) before rounding.
    pub zero_point: &'a [f32],
    /// The channel axis, per channel; `None` per tensor.
    pub axis: Option<usize>,
    /// `quant_min`.
    pub quant_min: i64,
    /// `quant_max`.
    pub quant_max: i64,
    /// The gradient scale ([`grad_factor`]).
    pub grad_factor: f32,
}

/// `_fake_quantize_learnable_per_{tensor,channel}_affine(x, scale, zero_point, …)`: the
/// fake-quant value of `x` with `args`' values, and the LSQ gradients
/// (see [`learnable_fake_quantize`](super::learnable_fake_quantize)) flowing to `x`, to
/// `scale_param` and to `zp_param` (shape `[1]` or `[channels]`; their values are not read: the
/// coefficients come from `args`).
pub(crate) fn lsq_fake_quant<const D: usize>(
    x: Tensor<D>,
    args: &LsqArgs<'_>,
    scale_param: Option<Tensor<1>>,
    zp_param: Option<Tensor<1>>,
) -> Result<Tensor<D>> {
    let (qmin, qmax) = (args.quant_min, args.quant_max);
    let (scale, zp, axis) = (args.scale, args.zero_point, args.axis);
    let round_clamp = |z: f32| z.round_ties_even().clamp(qmin as f32, qmax as f32);
    let xd = x.clone().detach();
    // Forward value and the backward zero-point `z`.
    let (fq, zb) = match axis {
        None => {
            let zf = round_clamp(zp[0]) as i64;
            let fq = fake_quantize_per_tensor(xd.clone(), scale[0], zf, qmin, qmax);
            let zb = ((zp[0] + 0.5f32).max(qmin as f32).min(qmax as f32)) as i64 as f32;
            (fq, vec![zb])
        }
        Some(axis) => {
            let zr: Vec<f32> = zp.iter().map(|&z| round_clamp(z)).collect();
            let zi: Vec<i64> = zr.iter().map(|&z| z as i64).collect();
            let fq = fake_quantize_per_channel(xd.clone(), scale, &zi, axis, qmin, qmax)?;
            (fq, zr)
        }
    };
    let tracked = |p: &Option<Tensor<1>>| p.as_ref().is_some_and(Tensor::is_tracked);
    if !x.is_tracked() && !tracked(&scale_param) && !tracked(&zp_param) {
        return Ok(fq);
    }
    // Per-element backward coefficients, computed on the host exactly as the CPU kernels
    // (`fake_quantize_learnable_{tensor,channel}_grad_kernel_cpu`) do. GCC contracts
    // `zero_point + x * inv_scale` and `xfq - x` into fused multiply-adds there, so
    // `mul_add` is used for both.
    let device = x.device();
    let dims = x.dims();
    let xs = tensor_to_vec(xd);
    let inner: usize = match axis {
        Some(a) => dims[a + 1..].iter().product(),
        None => 1,
    };
    let nch = scale.len();
    let g = args.grad_factor;
    let mut in_range = Vec::with_capacity(xs.len());
    let mut cs = Vec::with_capacity(xs.len());
    let mut cz = Vec::with_capacity(xs.len());
    for (i, &xv) in xs.iter().enumerate() {
        let c = if axis.is_some() { (i / inner) % nch } else { 0 };
        let (s, z) = (scale[c], zb[c]);
        let inv = 1.0f32 / s;
        let r = xv.mul_add(inv, z).round_ties_even();
        // static_cast<int64_t>: out-of-range and NaN give INT64_MIN.
        let xq = if r < 9_223_372_036_854_775_808.0f32 {
            r
        } else {
            f32::NEG_INFINITY
        };
        if xq < qmin as f32 {
            in_range.push(false);
            cs.push((qmin as f32 - z) * g);
            cz.push(-s * g);
        } else if xq > qmax as f32 {
            in_range.push(false);
            cs.push((qmax as f32 - z) * g);
            cz.push(-s * g);
        } else {
            in_range.push(true);
            cs.push((xq - z).mul_add(s, -xv) * inv * g);
            cz.push(0.0);
        }
    }
    let mask = Tensor::<D, Bool>::from_data(TensorData::new(in_range, dims), &device);
    let xm = x.mask_fill(mask.bool_not(), 0.0);
    let mut y = fq + (xm.clone() - xm.detach());
    for (param, coeffs) in [(scale_param, cs), (zp_param, cz)] {
        if let Some(p) = param.filter(Tensor::is_tracked) {
            let c = Tensor::<D>::from_data(TensorData::new(coeffs, dims), &device);
            let t = p.reshape(param_shape::<D>(axis, dims)).mul(c);
            y = y + (t.clone() - t.detach());
        }
    }
    Ok(y)
}

/// Broadcast shape of a per-tensor (`[1, …]`) or per-channel parameter.
fn param_shape<const D: usize>(axis: Option<usize>, dims: [usize; D]) -> [usize; D] {
    let mut s = [1usize; D];
    if let Some(axis) = axis {
        s[axis] = dims[axis];
    }
    s
}
