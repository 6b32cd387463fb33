//! What follows an inference convolution, per output channel, applied while its output is still
//! in cache: `y = clamp(acc · scale[c] + shift[c], lo, hi)`.
//!
//! That one map covers the convolution's bias, batch norm on running statistics and ReLU /
//! ReLU6: with `α = (1 / √(σ² + ε)) · γ`, PyTorch's inference batch norm is
//! `y = x · α + (β − μ · α)` (ATen's `batch_norm_cpu_collect_linear_and_constant_terms`), and a conv bias `b` moves into the shift as
//! `b · α`. Without batch norm, `scale` is one and `shift` the bias. The clamp lets NaN through
//! (as `torch.clamp` and `torch.relu` do).

use super::simd::dispatch_simd;

/// `y = clamp(acc · scale[c] + shift[c], lo, hi)` for each output channel `c`; `lo = −∞`,
/// `hi = ∞` for no activation, `(0, ∞)` for ReLU, `(0, 6)` for ReLU6.
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue {
    /// Per-channel factor (`[C]`).
    pub scale: Vec<f32>,
    /// Per-channel offset (`[C]`).
    pub shift: Vec<f32>,
    /// Lower clamp bound.
    pub lo: f32,
    /// Upper clamp bound.
    pub hi: f32,
}

impl Epilogue {
    /// The identity on `channels` channels (scale one, shift zero, no clamp).
    pub fn identity(channels: usize) -> Self {
        Self {
            scale: vec![1.0; channels],
            shift: vec![0.0; channels],
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        }
    }

    /// Output channels it covers.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// Adds a per-channel `bias` before the scale: `(acc + b) · s + t = acc · s + (b · s + t)`.
    ///
    /// # Panics
    /// If `bias` does not have one value per channel.
    pub fn with_bias_first(mut self, bias: &[f32]) -> Self {
        assert_eq!(bias.len(), self.channels(), "one bias per channel");
        for ((t, &s), &b) in self.shift.iter_mut().zip(&self.scale).zip(bias) {
            *t += b * s;
        }
        self
    }

    /// Divides the convolution's output by a per-channel `divisor` first:
    /// `(acc / d) · s + t = acc · (s / d) + t` (one rounding fewer than dividing the output).
    ///
    /// # Panics
    /// If `divisor` does not have one value per channel.
    pub fn divided_first(mut self, divisor: &[f32]) -> Self {
        assert_eq!(divisor.len(), self.channels(), "one divisor per channel");
        for (s, &d) in self.scale.iter_mut().zip(divisor) {
            *s /= d;
        }
        self
    }

    /// Batch norm on running statistics after the convolution, PyTorch's inference form
    /// `α = (1 / √(σ² + ε)) · γ`, `y = x · α + (β − μ · α)`.
    ///
    /// # Panics
    /// If the vectors do not all have one value per channel.
    pub fn batch_norm(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f64) -> Self {
        let c = gamma.len();
        assert!(
            [beta.len(), mean.len(), var.len()].iter().all(|&l| l == c),
            "one batch-norm value per channel"
        );
        let scale: Vec<f32> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| (1.0 / (v + eps as f32).sqrt()) * g)
            .collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((&b, &m), &a)| b - m * a)
            .collect();
        Self {
            scale,
            shift,
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        }
    }

    /// The same map followed by a clamp to `[lo, hi]`.
    pub fn clamped(self, lo: f32, hi: f32) -> Self {
        Self { lo, hi, ..self }
    }

    /// Applies channel `c`'s map to `values` in place.
    #[inline]
    pub fn apply(&self, c: usize, values: &mut [f32]) {
        affine_clamp(values, self.scale[c], self.shift[c], self.lo, self.hi);
    }

    /// Writes channel `c`'s map of `src` to `dst` (one pass for a copy and the map).
    ///
    /// # Panics
    /// If the lengths differ.
    #[inline]
    pub fn apply_from(&self, c: usize, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "equal lengths");
        affine_clamp_from(src, dst, self.scale[c], self.shift[c], self.lo, self.hi);
    }
}

/// One value's map; shared by every kernel so that all of them round alike.
#[inline(always)]
pub(super) fn affine_clamp_one(v: f32, scale: f32, shift: f32, lo: f32, hi: f32) -> f32 {
    let y = v * scale + shift;
    // Comparisons (not f32::max/min) so that NaN passes through, as in PyTorch; two selects,
    // which vectorise.
    let y = if y < lo { lo } else { y };
    if y > hi { hi } else { y }
}

dispatch_simd! {
    /// `v = clamp(v · scale + shift, lo, hi)` over a slice.
    pub(super) fn affine_clamp / affine_clamp_at / affine_clamp_portable(
        values: &mut [f32],
        scale: f32,
        shift: f32,
        lo: f32,
        hi: f32,
    ) {
        for v in values.iter_mut() {
            *v = affine_clamp_one(*v, scale, shift, lo, hi);
        }
    }
}

dispatch_simd! {
    /// `dst = clamp(src · scale + shift, lo, hi)` over the common length.
    pub(super) fn affine_clamp_from / affine_clamp_from_at / affine_clamp_from_portable(
        src: &[f32],
        dst: &mut [f32],
        scale: f32,
        shift: f32,
        lo: f32,
        hi: f32,
    ) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = affine_clamp_one(v, scale, shift, lo, hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::Isa;
    use super::*;

    #[test]
    fn every_build_equals_the_reference() {
        let base: Vec<f32> = (0..203)
            .map(|i| ((i * 37) % 29) as f32 * 0.71 - 9.0)
            .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0])
            .collect();
        for (lo, hi) in [
            (f32::NEG_INFINITY, f32::INFINITY),
            (0.0, 6.0),
            (0.0, f32::INFINITY),
        ] {
            let mut want = base.clone();
            affine_clamp_portable(&mut want, 1.3, -0.25, lo, hi);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for isa in Isa::available() {
                let mut got = base.clone();
                affine_clamp_at(isa, &mut got, 1.3, -0.25, lo, hi);
                assert_eq!(bits(&got), bits(&want), "{isa:?} clamp ({lo}, {hi})");
                let mut copied = vec![0.0; base.len()];
                affine_clamp_from_at(isa, &base, &mut copied, 1.3, -0.25, lo, hi);
                assert_eq!(bits(&copied), bits(&want), "{isa:?} copy ({lo}, {hi})");
            }
            // NaN stays NaN; the clamp holds.
            assert!(want[203].is_nan());
            assert!(want[..203].iter().all(|&v| v >= lo && v <= hi));
        }
    }

    #[test]
    fn folds_are_the_formulas() {
        let e = Epilogue::batch_norm(&[2.0], &[0.5], &[1.0], &[3.0], 1.0).with_bias_first(&[4.0]);
        // α = 2 / √4 = 1, shift = 0.5 − 1 · 1 + 4 · 1.
        assert_eq!((e.scale[0], e.shift[0]), (1.0, 3.5));
        let mut v = [1.0, -10.0, 10.0];
        e.clamped(0.0, 6.0).apply(0, &mut v);
        assert_eq!(v, [4.5, 0.0, 6.0]);
    }
}
