//! [`FakeQuantize`] on the generic path (`crate::ops::has_cpu_kernels` false: wgpu, CUDA):
//! observer, qparams and fake quantization as device tensors, so that a training step reads
//! nothing back to the host (on a GPU each read waits for every queued kernel).
//!
//! Per forward, as the host path (`fake_quantize.rs`) but with device tensors:
//!
//! ```text
//! observer on:  min, max ← observer update (observer::device; a non-finite batch is skipped)
//! Observer formula:  observer on:  scale, zp ← Python formula of (min, max)   (stored)
//! Fbgemm formula:    fake-quant on: scale, zp ← fbgemm formula of (min, max)  (stored where the
//!                                   range is observed; y = x while it is not)
//! fake-quant on:     y = fake_quant(x; scale, zp) with the straight-through gradient
//! ```
//!
//! The qparams formulas are [`super::device_qparams`]; scale and zero-point are read back only
//! by [`FakeQuantize::current_qparams`], [`FakeQuantize::calculate_qparams`] and `convert`.

use burn::tensor::{Bool, Tensor};

use super::device_qparams::{DeviceQParams, fbgemm_qparams, observer_qparams};
use super::fake_quantize::FakeQuantize;
use super::functional::fake_quantize_on_device;
use super::observer::ObserverKind;
use super::qparams::QParamsCalculator;
use crate::ops::has_cpu_kernels;

impl FakeQuantize {
    /// Whether the forward of `x` takes the generic path: a min/max observer, no LSQ, and a
    /// device without the CPU kernels.
    pub(super) fn runs_on_device<const D: usize>(&self, x: &Tensor<D>) -> bool {
        self.learnable.is_none()
            && self.activation_post_process.config().kind != ObserverKind::Histogram
            && !has_cpu_kernels(&x.device())
    }

    /// The forward pass on the generic path (see the [module docs](self)).
    ///
    /// # Panics
    /// If `x` does not have the channel count a per-channel fake-quant was built for.
    pub(super) fn forward_on_device<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let obs = &self.activation_post_process;
        let (observing, quantizing) = (self.observer_enabled(), self.fake_quant_enabled());
        let range = observing.then(|| obs.observe_on_device(&x));
        let (qparams, observed) = match self.calculator() {
            QParamsCalculator::Observer => match range {
                Some((min, max)) => {
                    let qparams = observer_qparams(min, max, &obs.qparams_spec());
                    self.store_on_device(qparams.clone());
                    (Some(qparams), None)
                }
                None => (None, None),
            },
            QParamsCalculator::Fbgemm if quantizing => {
                let (min, max) = range.unwrap_or_else(|| obs.range_on_device());
                let (qparams, observed) = self.fbgemm_where_observed(min, max);
                self.store_on_device(qparams.clone());
                (Some(qparams), Some(observed))
            }
            QParamsCalculator::Fbgemm => (None, None),
        };
        if !quantizing {
            return x;
        }
        let qparams = qparams.unwrap_or_else(|| self.qparams_on_device());
        let axis = obs.qscheme().is_per_channel().then_some(obs.ch_axis());
        let y = fake_quantize_on_device(x.clone(), qparams, axis, obs.quant_min(), obs.quant_max());
        match observed {
            // Before any range was observed, the fused fake-quant passes the batch through.
            Some(observed) => {
                let unobserved = observed.bool_not().reshape([1; D]).expand(x.dims());
                y.mask_where(unobserved, x)
            }
            None => y,
        }
    }

    /// The fbgemm qparams of the running range, and `[1]` whether every element of it is
    /// observed (finite); where it is not, the stored qparams are kept.
    fn fbgemm_where_observed(
        &self,
        min: Tensor<1>,
        max: Tensor<1>,
    ) -> (DeviceQParams, Tensor<1, Bool>) {
        let obs = &self.activation_post_process;
        let observed = min
            .clone()
            .is_inf()
            .bool_or(max.clone().is_inf())
            .any()
            .bool_not();
        let (scale, zero_point) = fbgemm_qparams(
            min,
            max,
            obs.quant_min(),
            obs.quant_max(),
            obs.qscheme().is_symmetric(),
        );
        let (old_scale, old_zero_point) = self.qparams_on_device();
        let keep = observed.clone().bool_not().expand(old_scale.dims());
        (
            (
                scale.mask_where(keep.clone(), old_scale),
                zero_point.mask_where(keep, old_zero_point),
            ),
            observed,
        )
    }

    /// The stored scale and zero-point as device tensors.
    pub(super) fn qparams_on_device(&self) -> DeviceQParams {
        (self.scale.value_sync(), self.zero_point.value_sync())
    }

    fn store_on_device(&self, (scale, zero_point): DeviceQParams) {
        self.scale.update(scale);
        self.zero_point.update(zero_point);
    }

    /// [`FakeQuantize::refresh_qparams`] on the device: the forward formula of the committed
    /// range, stored where the range is observed. Returns false (nothing done) where the
    /// CPU kernels run.
    pub(super) fn refresh_qparams_on_device(&self) -> bool {
        let obs = &self.activation_post_process;
        let (min, _) = obs.range_on_device();
        // LSQ's static estimate is the observer formula's: refreshed alike.
        if !obs.on_device(&min) {
            return false;
        }
        if !self.observer_enabled()
            || self.calculator() == QParamsCalculator::Fbgemm && !self.fake_quant_enabled()
        {
            return true;
        }
        let (min, max) = obs.range_on_device();
        let qparams = match self.calculator() {
            QParamsCalculator::Fbgemm => self.fbgemm_where_observed(min, max).0,
            QParamsCalculator::Observer => {
                let observed = min.clone().is_inf().bool_not();
                let (scale, zero_point) = observer_qparams(min, max, &obs.qparams_spec());
                let (old_scale, old_zero_point) = self.qparams_on_device();
                let keep = observed.bool_not();
                (
                    scale.mask_where(keep.clone(), old_scale),
                    zero_point.mask_where(keep, old_zero_point),
                )
            }
        };
        self.store_on_device(qparams);
        true
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use crate::ops::force_generic_path;
    use crate::quant::{
        FakeQuantizeConfig, ObserverConfig, ObserverKind, QParamsCalculator, QScheme, QuantDtype,
    };
    use crate::state::host_read::{host_reads, read_f32};

    fn bits(t: Tensor<2>) -> Vec<u32> {
        read_f32(t).iter().map(|f| f.to_bits()).collect()
    }

    /// Equal bits, or (`exact` false) within 2 f32 roundings relative.
    fn assert_near(a: &[f32], b: &[f32], exact: bool, what: &str) {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        if exact {
            return assert_eq!(bits(a), bits(b), "{what}");
        }
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            let close = x.to_bits() == y.to_bits() || ((x - y) / y).abs() <= 2.0 * f32::EPSILON;
            assert!(close, "{what}: {a:?} vs {b:?}");
        }
    }

    /// The generic path gives the CPU path's outputs, gradients, ranges and qparams on these
    /// batches (a non-finite one first, so the fused formula starts unobserved; the observer and
    /// then the fake-quant switched off), per tensor and per channel, for both formulas —
    /// reading nothing back while it runs. Bit for bit, except that the fused (fbgemm) scale
    /// is computed in f32 where the host uses f64 in places: scales and outputs within one
    /// rounding there (zero-points, gradients and ranges still equal).
    #[test]
    fn generic_path_matches_the_cpu_path() {
        let device = Device::flex().autodiff();
        let batches: Vec<Vec<f32>> = vec![
            vec![f32::NAN, 1.0, -2.0, 3.0, 0.5, 0.25],
            (0..6).map(|i| (i as f32 - 4.0) * 0.37).collect(),
            vec![-1.0, 0.0, -0.0, 2.5, 7.0, 0.25],
            (0..6).map(|i| ((i * 13) % 5) as f32 * 0.9 - 3.0).collect(),
            (0..6).map(|i| (i as f32 - 1.0) * 0.11).collect(),
            (0..6).map(|i| (i as f32 - 2.0) * 0.5).collect(),
        ];
        for calculator in [QParamsCalculator::Observer, QParamsCalculator::Fbgemm] {
            for (qscheme, dtype, channels) in [
                (QScheme::PerTensorAffine, QuantDtype::QUInt8, 1),
                (QScheme::PerChannelSymmetric, QuantDtype::QInt8, 2),
            ] {
                let observer = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
                    .with_qscheme(qscheme)
                    .with_dtype(dtype);
                let config = FakeQuantizeConfig::new(observer).with_calculator(calculator);
                let mut cpu = config.init(channels, &device).unwrap();
                let mut generic = config.init(channels, &device).unwrap();
                // A per-channel fake-quant with the observer formula has no per-channel qparams
                // before its first range (PyTorch's default is one scale): start it finite.
                let mut order: Vec<&Vec<f32>> = batches.iter().collect();
                if calculator == QParamsCalculator::Observer && channels > 1 {
                    order.swap(0, 1);
                }
                for (step, values) in order.into_iter().enumerate() {
                    if step == 4 {
                        cpu.disable_observer();
                        generic.disable_observer();
                    }
                    if step == 5 {
                        cpu.disable_fake_quant();
                        generic.disable_fake_quant();
                    }
                    let what = format!("{calculator:?} {qscheme:?}, batch {step}");
                    let x = || {
                        Tensor::<2>::from_data(TensorData::new(values.clone(), [2, 3]), &device)
                            .require_grad()
                    };
                    let dy = Tensor::<2>::from_data(
                        TensorData::new((0..6).map(|i| i as f32 + 0.5).collect::<Vec<_>>(), [2, 3]),
                        &device,
                    );
                    let (xa, xb) = (x(), x());
                    let ya = cpu.forward(xa.clone());
                    let reads = host_reads();
                    let yb = {
                        let _generic = force_generic_path();
                        generic.forward(xb.clone())
                    };
                    assert_eq!(host_reads(), reads, "reads, {what}");
                    let exact = calculator == QParamsCalculator::Observer;
                    let (va, vb) = (read_f32(ya.clone()), read_f32(yb.clone()));
                    assert_near(&vb, &va, exact, &format!("output, {what}"));

                    let ga = (ya * dy.clone()).sum().backward();
                    let gb = (yb * dy).sum().backward();
                    assert_eq!(
                        bits(xb.grad(&gb).unwrap()),
                        bits(xa.grad(&ga).unwrap()),
                        "gradient, {what}"
                    );
                    assert_eq!(
                        format!("{:?}", generic.activation_post_process.min_max()),
                        format!("{:?}", cpu.activation_post_process.min_max()),
                        "range, {what}"
                    );
                    let (qa, qb) = (cpu.current_qparams(), generic.current_qparams());
                    assert_near(&qb.scale, &qa.scale, exact, &format!("scale, {what}"));
                    assert_eq!(qb.zero_point, qa.zero_point, "zero-point, {what}");
                }
                assert_eq!(generic.activation_post_process.skipped_batches(), 1);
            }
        }
    }
}
