//! The LSQ forward on the generic path (`crate::ops::has_cpu_kernels` false: wgpu, CUDA): the
//! static estimate, the learned values and the per-element backward coefficients of
//! [`lsq_fake_quant`](super::lsq_fake_quant) as device tensors, so that an LSQ training step
//! reads nothing back to the host.
//!
//! The coefficients follow the host formulas, except that the host contracts
//! `x · (1/s) + z` and `(x_q − z) · s − x` into fused multiply-adds as PyTorch's CPU kernel does,
//! which Burn's tensor ops cannot ask for: a gradient coefficient can differ in its last bits,
//! and an element within an f32 rounding of a .5 tie can round the other way there.

use burn::tensor::{Bool, Tensor};

use super::super::device_qparams::{DeviceQParams, observer_qparams};
use super::super::fake_quantize::FakeQuantize;
use super::super::functional::fake_quantize_on_device;
use super::{EPS, LearnableQParams, param_shape, set_pending};
use crate::numerics::TWO_POW_63;
use crate::ops::has_cpu_kernels;

/// An untracked copy of a parameter's values.
fn values(t: Tensor<1>) -> Tensor<1> {
    t.detach().set_require_grad(false)
}

impl FakeQuantize {
    /// [`FakeQuantize::sync_learnable`] on the device: the parameters take the static estimate
    /// where one is pending, selected by a mask. Returns false (nothing done) for a plain
    /// fake-quant or where the CPU kernels run.
    pub(in crate::quant) fn sync_learnable_on_device(&mut self) -> bool {
        let estimate = (self.scale.value_sync(), self.zero_point.value_sync());
        let Some(l) = self.learnable.as_mut() else {
            return false;
        };
        if has_cpu_kernels(&estimate.0.device()) {
            return false;
        }
        let pending = l.static_estimate_pending.value_sync().not_equal_elem(0.0);
        for (param, estimate) in [(&mut l.scale, estimate.0), (&mut l.zero_point, estimate.1)] {
            let take = pending.clone().expand(estimate.dims());
            let old = param.clone();
            *param = old.map(|t| {
                let require_grad = t.is_require_grad();
                values(t)
                    .mask_where(take, estimate)
                    .set_require_grad(require_grad)
            });
        }
        set_pending(l, false);
        true
    }

    /// [`FakeQuantize::run_learnable`] on the device (see the [module docs](self)).
    pub(in crate::quant) fn run_learnable_on_device<const D: usize>(
        &self,
        l: &LearnableQParams,
        x: Tensor<D>,
    ) -> Tensor<D> {
        let obs = &self.activation_post_process;
        let (scale, zero_point) = if self.observer_enabled() {
            let (min, max) = obs.observe_on_device(&x);
            let (scale, zero_point) = observer_qparams(min, max, &obs.qparams_spec());
            self.scale.update(scale.clone());
            self.zero_point.update(zero_point.clone());
            set_pending(l, true);
            (scale, zero_point)
        } else {
            (
                values(l.scale.val()).clamp_min(EPS),
                values(l.zero_point.val()),
            )
        };
        if !self.fake_quant_enabled() {
            return x;
        }
        let symmetric = obs.qscheme().is_symmetric();
        let zero_point = if symmetric {
            zero_point.zeros_like()
        } else {
            zero_point
        };
        let axis = obs.qscheme().is_per_channel().then_some(obs.ch_axis());
        let grad_factor = l.grad_factor(x.shape().num_elements());
        let zp_param = (!symmetric).then(|| l.zero_point.val());
        l.fake_quant_on_device(
            x,
            (scale, zero_point),
            axis,
            grad_factor,
            Some(l.scale.val()),
            zp_param,
        )
    }
}

impl LearnableQParams {
    /// `lsq_fake_quant` with device qparams: the value of `x` fake-quantized with `scale` and
    /// the rounded zero-point, and the LSQ gradients to `x`, `scale_param` and `zp_param`.
    fn fake_quant_on_device<const D: usize>(
        &self,
        x: Tensor<D>,
        (scale, zero_point): DeviceQParams,
        axis: Option<usize>,
        grad_factor: f32,
        scale_param: Option<Tensor<1>>,
        zp_param: Option<Tensor<1>>,
    ) -> Tensor<D> {
        let (qmin, qmax) = (self.quant_min as f32, self.quant_max as f32);
        let rounded = zero_point.clone().round().clamp(qmin, qmax);
        // The backward zero-point: per tensor `(int64)clamp(z + 0.5)`, per channel the rounded one.
        let backward_zp = match axis {
            None => zero_point.add_scalar(0.5).clamp(qmin, qmax).int().float(),
            Some(_) => rounded.clone(),
        };
        let xd = x.clone().detach().set_require_grad(false);
        let fq = fake_quantize_on_device(
            xd.clone(),
            (scale.clone(), rounded),
            axis,
            self.quant_min,
            self.quant_max,
        );
        let tracked = |p: &Option<Tensor<1>>| p.as_ref().is_some_and(Tensor::is_tracked);
        if !x.is_tracked() && !tracked(&scale_param) && !tracked(&zp_param) {
            return fq;
        }
        let dims = x.dims();
        let shape = param_shape::<D>(axis, dims);
        let s: Tensor<D> = scale.reshape(shape);
        let z: Tensor<D> = backward_zp.reshape(shape);
        let inv = s.clone().recip();
        let r = xd.clone().mul(inv.clone()).add(z.clone()).round();
        // static_cast<int64_t>: out-of-range and NaN give INT64_MIN.
        let xq = r
            .clone()
            .mask_fill(r.lower_elem(TWO_POW_63).bool_not(), f32::NEG_INFINITY);
        let below = xq.clone().lower_elem(qmin);
        let above = xq.clone().greater_elem(qmax);
        let outside: Tensor<D, Bool> = below.clone().bool_or(above);
        let g = grad_factor;
        let cs_inside = xq
            .sub(z.clone())
            .mul(s.clone())
            .sub(xd)
            .mul(inv)
            .mul_scalar(g);
        let high = z.clone().neg().add_scalar(qmax).mul_scalar(g).expand(dims);
        let low = z.neg().add_scalar(qmin).mul_scalar(g).expand(dims);
        let cs_outside = high.mask_where(below, low);
        let cs = cs_inside.mask_where(outside.clone(), cs_outside);
        let cz = s
            .neg()
            .mul_scalar(g)
            .expand(dims)
            .mask_fill(outside.clone().bool_not(), 0.0);
        let xm = x.mask_fill(outside, 0.0);
        let mut y = fq + (xm.clone() - xm.detach());
        for (param, coeffs) in [(scale_param, cs), (zp_param, cz)] {
            if let Some(p) = param.filter(Tensor::is_tracked) {
                let t = p.reshape(shape).mul(coeffs);
                y = y + (t.clone() - t.detach());
            }
        }
        y
    }
}
