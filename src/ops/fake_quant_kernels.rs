//! Fake quantization on contiguous `f32` slices, per tensor or per channel: the forward value and
//! the straight-through gradient, element for element as PyTorch's CPU kernels compute them
//! (see `quant::functional` for the formulas and their sources):
//!
//! ```text
//! v    = nearbyint(x · (1/scale)) + zero_point     // f32, ties to even
//! v    = −∞ where v ≥ 2^63 or NaN                  // the int64 conversion's INT64_MIN
//! q    = clamp(v, quant_min, quant_max)
//! y    = (q − zero_point) · scale
//! dx   = dy where q == v, else 0
//! ```
//!
//! With [`FakeQuantSpec::relu`], `x` is first replaced by `relu(x)` (as Burn's CPU ReLU: NaN kept)
//! and `dx` is also 0 where `x ≤ 0`: ReLU and the fake-quant after it in one pass each way.
//!
//! The backward pass recomputes the mask from `x` instead of storing it: one multiply and round
//! per element, and no tensor kept alive beyond the input autodiff holds anyway.

use rayon::prelude::*;

use super::simd::dispatch_avx2;
use super::{TASK_VALUES, task_len};
use crate::numerics::{TWO_POW_63, round_half_even};

/// Quantization parameters of one fake-quant call: one `(scale, zero_point)` per channel of
/// `axis` (a single pair for per-tensor).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuantSpec {
    /// Scales, one per channel (or one).
    pub scale: Vec<f32>,
    /// Zero-points, one per channel (or one).
    pub zero_point: Vec<i64>,
    /// Number of elements after `axis` in row-major order (the channel of element `i` is
    /// `(i / inner) % scale.len()`); unused for per-tensor.
    pub inner: usize,
    /// Lowest quantized value.
    pub quant_min: i64,
    /// Highest quantized value.
    pub quant_max: i64,
    /// Whether `x` is a ReLU's input: the result is `fake_quant(relu(x))` and its gradient.
    pub relu: bool,
}

/// One channel's constants in the form the loop uses.
#[derive(Clone, Copy)]
pub(super) struct Channel {
    scale: f32,
    inv_scale: f32,
    zero_point: f32,
    min: f32,
    max: f32,
    relu: bool,
}

impl Channel {
    /// `(y, in range)` for one element.
    #[inline(always)]
    pub(super) fn apply(self, x: f32) -> (f32, bool) {
        // `x <= 0` is false for NaN, which ReLU passes on (and its gradient too).
        let cut = self.relu && x <= 0.0;
        let x = if cut { 0.0 } else { x };
        let v = round_half_even(x * self.inv_scale) + self.zero_point;
        let v = if v < TWO_POW_63 { v } else { f32::NEG_INFINITY };
        let q = v.max(self.min).min(self.max);
        ((q - self.zero_point) * self.scale, q == v && !cut)
    }
}

impl FakeQuantSpec {
    /// One `(scale, zero_point)` pair for the whole tensor.
    pub fn per_tensor(scale: f32, zero_point: i64, quant_min: i64, quant_max: i64) -> Self {
        FakeQuantSpec {
            scale: vec![scale],
            zero_point: vec![zero_point],
            inner: 0,
            quant_min,
            quant_max,
            relu: false,
        }
    }

    /// The same parameters applied after a ReLU ([`Self::relu`]).
    pub fn after_relu(self) -> Self {
        FakeQuantSpec { relu: true, ..self }
    }

    pub(super) fn channels(&self) -> Vec<Channel> {
        self.scale
            .iter()
            .zip(&self.zero_point)
            .map(|(&scale, &zp)| Channel {
                scale,
                inv_scale: 1.0f32 / scale,
                zero_point: zp as f32,
                min: self.quant_min as f32,
                max: self.quant_max as f32,
                relu: self.relu,
            })
            .collect()
    }

    /// Elements per parallel run: a channel's `inner` block, or [`TASK_VALUES`] for per-tensor.
    fn run(&self) -> usize {
        if self.scale.len() == 1 {
            TASK_VALUES
        } else {
            self.inner.max(1)
        }
    }
}

/// `y = fake_quant(x)`.
pub fn forward(spec: &FakeQuantSpec, x: &[f32], y: &mut [f32]) {
    let (channels, run) = (spec.channels(), spec.run());
    let task = task_len(run);
    y.par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .enumerate()
        .for_each(|(t, (y, x))| {
            let first = t * (task / run);
            for (r, (y, x)) in y.chunks_mut(run).zip(x.chunks(run)).enumerate() {
                forward_run(channels[(first + r) % channels.len()], x, y);
            }
        });
}

/// `dx = dy · mask(x)`, in place: `grad` holds `dy` and becomes `dx` (the output gradient is
/// not needed afterwards, so no new buffer is filled).
pub fn backward(spec: &FakeQuantSpec, x: &[f32], grad: &mut [f32]) {
    let (channels, run) = (spec.channels(), spec.run());
    let task = task_len(run);
    grad.par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .enumerate()
        .for_each(|(t, (grad, x))| {
            let first = t * (task / run);
            for (r, (grad, x)) in grad.chunks_mut(run).zip(x.chunks(run)).enumerate() {
                backward_run(channels[(first + r) % channels.len()], x, grad);
            }
        });
}

dispatch_avx2! {
    /// One channel's run of [`forward`].
    fn forward_run / forward_run_portable(ch: Channel, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = ch.apply(x).0;
        }
    }
}

dispatch_avx2! {
    /// One channel's run of [`backward`].
    fn backward_run / backward_run_portable(ch: Channel, x: &[f32], grad: &mut [f32]) {
        // The mask goes through a small buffer and is then ANDed in: written as one loop,
        // `if in_range { *g } else { 0.0 }` becomes a masked store (`vmaskmovps`), which is
        // microcoded on AMD and made this loop 3× slower than the forward one. Same bits.
        const BLOCK: usize = 64;
        for (grad, x) in grad.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
            let mut keep = [0u32; BLOCK];
            for (k, &x) in keep.iter_mut().zip(x) {
                *k = (ch.apply(x).1 as u32).wrapping_neg();
            }
            for (g, &k) in grad.iter_mut().zip(&keep) {
                *g = f32::from_bits(g.to_bits() & k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values around every rounding decision: ties (`k + 0.5` quanta), their neighbours one ulp
    /// away, the clamp edges, out-of-range and non-finite values, and a pseudo-random spread.
    fn probe_values(scale: f32) -> Vec<f32> {
        let mut v = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            0.0,
            -0.0,
        ];
        for k in -300..300 {
            let tie = (k as f32 + 0.5) * scale;
            v.extend([tie, tie.next_up(), tie.next_down(), k as f32 * scale]);
        }
        let mut state = 0x2545_f491_u32;
        v.extend((0..5000).map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 600.0 * scale
        }));
        v
    }

    /// The dispatched (AVX2 where the CPU has it) and the portable builds agree bit for bit.
    #[test]
    fn dispatched_runs_match_the_portable_build_bit_for_bit() {
        for (scale, zero_point, quant_min, quant_max) in [
            (0.05f32, 3i64, 0i64, 255i64),
            (0.013, 0, -128, 127),
            (0.7, -2, -127, 127),
        ] {
            let plain = FakeQuantSpec::per_tensor(scale, zero_point, quant_min, quant_max);
            for spec in [plain.clone(), plain.after_relu()] {
                let ch = spec.channels()[0];
                let x = probe_values(scale);
                let dy: Vec<f32> = (0..x.len()).map(|i| i as f32 * 0.25 - 7.0).collect();
                let (mut fast, mut reference) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                forward_run(ch, &x, &mut fast);
                forward_run_portable(ch, &x, &mut reference);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                let what = format!("scale {scale}, relu {}", spec.relu);
                assert_eq!(bits(&fast), bits(&reference), "forward, {what}");
                let (mut fast, mut reference) = (dy.clone(), dy);
                backward_run(ch, &x, &mut fast);
                backward_run_portable(ch, &x, &mut reference);
                assert_eq!(bits(&fast), bits(&reference), "backward, {what}");
            }
        }
    }

    /// Per-channel runs shorter than a parallel task (a depthwise weight's 9 values) are grouped
    /// into tasks; every element still gets its own channel's parameters.
    #[test]
    fn short_per_channel_runs_spanning_several_tasks_use_their_own_channel() {
        let (channels, inner) = (4000usize, 9usize);
        let spec = FakeQuantSpec {
            scale: (0..channels).map(|c| 0.01 + c as f32 * 1e-4).collect(),
            zero_point: (0..channels).map(|c| (c % 7) as i64 - 3).collect(),
            inner,
            quant_min: -128,
            quant_max: 127,
            relu: false,
        };
        let n = channels * inner;
        assert!(n > 2 * TASK_VALUES, "the case must span several tasks");
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.003 - 1.5)
            .collect();
        let dy = vec![1.0f32; n];
        let (mut y, mut dx) = (vec![0.0; n], dy);
        forward(&spec, &x, &mut y);
        backward(&spec, &x, &mut dx);
        let per_channel = spec.channels();
        for i in 0..n {
            let (want, in_range) = per_channel[i / inner].apply(x[i]);
            assert_eq!(y[i].to_bits(), want.to_bits(), "y[{i}]");
            assert_eq!(dx[i], if in_range { 1.0 } else { 0.0 }, "dx[{i}]");
        }
    }

    /// The ReLU spec gives what ReLU (NaN kept) and then the plain fake-quant give, bit for bit,
    /// and the product of their two straight-through masks.
    #[test]
    fn after_relu_is_relu_then_fake_quant() {
        let plain = FakeQuantSpec::per_tensor(0.05, 0, 0, 255);
        let x = probe_values(0.05);
        let relu = |v: f32| if v > 0.0 || v.is_nan() { v } else { 0.0 };
        let relu_x: Vec<f32> = x.iter().map(|&v| relu(v)).collect();
        let n = x.len();
        let (mut fused, mut reference) = (vec![0.0; n], vec![0.0; n]);
        forward(&plain.clone().after_relu(), &x, &mut fused);
        forward(&plain, &relu_x, &mut reference);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&reference));
        let dy: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 + 1.0).collect();
        let (mut fused, mut reference) = (dy.clone(), dy.clone());
        backward(&plain.clone().after_relu(), &x, &mut fused);
        backward(&plain, &relu_x, &mut reference);
        for i in 0..n {
            let want = if x[i] <= 0.0 { 0.0 } else { reference[i] };
            assert_eq!(
                fused[i].to_bits(),
                want.to_bits(),
                "dx[{i}] for x = {}",
                x[i]
            );
        }
    }
}
