//! The min/max observers' update as device tensors: what runs where the CPU kernels do not
//! (`crate::ops::has_cpu_kernels` false: wgpu, CUDA), so that a training step never waits for a
//! read back to the host.
//!
//! Per batch `X` (detached), with `c` the averaging constant:
//!
//! ```text
//! b_min, b_max = min(X), max(X)                 per tensor: [1]; per channel: min_dim / max_dim
//!                                               of X with ch_axis first, reshaped [C, -1]
//! finite       = sum(0 · X) == 0                [1]: false if X holds NaN or ±inf
//! MinMax:        min ← min(min, b_min)          max ← max(max, b_max)
//! MovingAverage: min ← b_min where min = ±inf, else min + c · (b_min − min)   (max alike)
//! min, max     ← the old values where !finite   (the batch is skipped, as on the CPU)
//! ```
//!
//! The same formulas as the host update ([`super::moving_average`]), element for element in
//! f32. A skipped batch is decided on the device; it is counted in a device tensor that
//! [`Observer::skipped_batches`] reads (no warning is printed for it, unlike the CPU path, which
//! knows at once). The histogram observer (post-training calibration, not QAT) stays on the host.

use burn::tensor::{Bool, Tensor};

use super::{Observer, ObserverKind};

/// Per-tensor (`axis = None`) or per-channel `(min, max)` of a batch as device tensors of one or
/// `dims[axis]` values, and `[1]` true if every value is finite. `x` must not be empty.
///
/// # Panics
/// If `axis` is out of range for `x` (a model-construction bug).
pub(crate) fn batch_range<const D: usize>(
    x: &Tensor<D>,
    axis: Option<usize>,
) -> (Tensor<1>, Tensor<1>, Tensor<1, Bool>) {
    // `detach` keeps a leaf's `require_grad`: without the second call the range would be a
    // tracked leaf, and so would every state computed from it.
    let x = x.clone().detach().set_require_grad(false);
    let finite = x.clone().mul_scalar(0.0).sum().equal_elem(0.0);
    let (min, max) = match axis {
        None => (x.clone().min(), x.max()),
        Some(axis) => {
            assert!(
                axis < D,
                "channel axis {axis} is out of range for a rank-{D} input"
            );
            let channels = x.dims()[axis];
            let rows: Tensor<2> = x.swap_dims(0, axis).reshape([channels as i64, -1]);
            (
                rows.clone().min_dim(1).reshape([channels]),
                rows.max_dim(1).reshape([channels]),
            )
        }
    };
    (min, max, finite)
}

/// `running + c · (batch − running)`, or `batch` where `running` is infinite (not observed yet).
pub(crate) fn moving_average(running: Tensor<1>, batch: Tensor<1>, c: f32) -> Tensor<1> {
    let first = running.clone().is_inf();
    let averaged = batch
        .clone()
        .sub(running.clone())
        .mul_scalar(c)
        .add(running);
    averaged.mask_where(first, batch)
}

impl Observer {
    /// The running `(min, max)` as device tensors (pending updates of this thread folded in).
    pub(crate) fn range_on_device(&self) -> (Tensor<1>, Tensor<1>) {
        (self.min_val.value_sync(), self.max_val.value_sync())
    }

    /// Observes `x` on the device (see the [module docs](self)): writes and returns the new
    /// running `(min, max)`; an empty `x` changes nothing. Min/max observers only.
    ///
    /// # Panics
    /// If `x` does not have the channel count this per-channel observer was built for.
    pub(crate) fn observe_on_device<const D: usize>(
        &self,
        x: &Tensor<D>,
    ) -> (Tensor<1>, Tensor<1>) {
        let (min, max) = self.range_on_device();
        if x.shape().num_elements() == 0 {
            return (min, max);
        }
        let axis = self.qscheme().is_per_channel().then_some(self.ch_axis());
        let (b_min, b_max, finite) = batch_range(x, axis);
        let n = min.dims()[0];
        assert_eq!(
            b_min.dims()[0],
            n,
            "observer was built for {n} channels but the input has {} along axis {}",
            b_min.dims()[0],
            self.ch_axis()
        );
        let (new_min, new_max) = match self.config.kind {
            ObserverKind::MinMax => (min.clone().min_pair(b_min), max.clone().max_pair(b_max)),
            _ => {
                let c = self.config.averaging_constant as f32;
                (
                    moving_average(min.clone(), b_min, c),
                    moving_average(max.clone(), b_max, c),
                )
            }
        };
        let skip = finite.clone().bool_not().expand([n]);
        let new_min = new_min.mask_where(skip.clone(), min);
        let new_max = new_max.mask_where(skip, max);
        self.count_skipped_on_device(finite);
        self.min_val.update(new_min.clone());
        self.max_val.update(new_max.clone());
        (new_min, new_max)
    }

    /// Adds 1 to the device count of skipped batches unless `finite`.
    fn count_skipped_on_device(&self, finite: Tensor<1, Bool>) {
        let skipped = finite.bool_not().float();
        let mut pending = self.skipped_on_device.lock().expect("skip counter lock");
        *pending = Some(match pending.take() {
            Some(count) => count.add(skipped),
            None => skipped,
        });
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::super::{ObserverConfig, ObserverKind};
    use crate::quant::QScheme;

    /// The device update gives the host's running range bit for bit, for both statistics, per
    /// tensor and per channel (axes 0 and 1), with non-finite batches skipped and counted.
    #[test]
    fn device_update_is_the_host_update() {
        let device = Device::flex().autodiff();
        let batch = |step: usize| -> Vec<f32> {
            let mut v: Vec<f32> = (0..24)
                .map(|i| (((i * 37 + step * 11) % 29) as f32 - 14.0) * 0.13 * (step + 1) as f32)
                .collect();
            match step {
                2 => v[5] = f32::NAN,
                4 => v[17] = f32::NEG_INFINITY,
                _ => {}
            }
            v
        };
        for kind in [ObserverKind::MinMax, ObserverKind::MovingAverageMinMax] {
            for (qscheme, axis, channels) in [
                (QScheme::PerTensorAffine, 0, 1),
                (QScheme::PerChannelAffine, 0, 2),
                (QScheme::PerChannelSymmetric, 1, 3),
            ] {
                let config = ObserverConfig::new(kind)
                    .with_qscheme(qscheme)
                    .with_ch_axis(axis)
                    .with_averaging_constant(0.3);
                let host = config.init(channels, &device).unwrap();
                let on_device = config.init(channels, &device).unwrap();
                for step in 0..6 {
                    let x =
                        Tensor::<3>::from_data(TensorData::new(batch(step), [2, 3, 4]), &device);
                    host.observe_lenient(&x);
                    on_device.observe_on_device(&x);
                    assert_eq!(
                        format!("{:?}", on_device.min_max()),
                        format!("{:?}", host.min_max()),
                        "{kind:?} {qscheme:?} axis {axis}, step {step}"
                    );
                }
                assert_eq!(on_device.skipped_batches(), 2);
                assert_eq!(host.skipped_batches(), 2);
            }
        }
    }
}
