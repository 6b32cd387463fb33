//! The QAT ConvBn weight path on contiguous `f32` slices: rows of `W` (one per output channel)
//! scaled by `s` (`γ / σ`), observed and fake-quantized per row, without materializing `W · s`
//! (PyTorch: `weight_fake_quant(self.weight * scale_factor.reshape(...))` in
//! `torch/ao/nn/intrinsic/qat/modules/conv_fused.py`, `_ConvBnNd._forward_approximate`):
//!
//! ```text
//! v[c, k]  = W[c, k] · s[c]                          // f32, as Burn's broadcast multiply
//! y[c, k]  = fake_quant_c(v[c, k])                   // fake_quant_kernels, channel c's qparams
//! g[c, k]  = dy[c, k] where v[c, k] in range, else 0 // the straight-through mask
//! dW[c, k] = g[c, k] · s[c]
//! ds[c]    = Σ_k g[c, k] · W[c, k]
//! ```
//!
//! `dW` and `ds` come out of one pass; the unfused path (`W · s` as a tensor, the fake-quant, the
//! multiply's backward) reads and writes the weights five times and makes three more autodiff
//! nodes per layer. `dW` and `v` are bit for bit the unfused values; `ds` is the same sum in
//! another order.

use rayon::prelude::*;

use super::fake_quant_kernels::{Channel, FakeQuantSpec};
use super::lanes::LANES;
use super::min_max::chunk_min_max;
use super::simd::dispatch_avx2;
use super::task_len;

/// Calls `f(c, row c of w, out[c])` for each of the `out.len()` equal rows of `w`, in parallel
/// tasks of whole rows.
fn for_each_row<T: Send>(w: &[f32], out: &mut [T], f: impl Fn(usize, &[f32], &mut T) + Sync) {
    let row = (w.len() / out.len().max(1)).max(1);
    let per_task = task_len(row) / row;
    out.par_chunks_mut(per_task)
        .zip(w.par_chunks(per_task * row))
        .enumerate()
        .for_each(|(t, (out, w))| {
            for (r, (out, w)) in out.iter_mut().zip(w.chunks(row)).enumerate() {
                f(t * per_task + r, w, out);
            }
        });
}

/// Per row: `(min, max, all finite)` of `W[c, ·] · s[c]` (the per-channel observer's batch
/// range of the scaled weight), as [`super::min_max::min_max_kernel`] gives it on `W · s`.
pub fn min_max(w: &[f32], s: &[f32]) -> Vec<(f32, f32, bool)> {
    let mut ranges = vec![(0.0, 0.0, true); s.len()];
    for_each_row(w, &mut ranges, |c, w, range| {
        // Through a stack block, not a row-long buffer: a weight has thousands of rows a step.
        *range = (f32::INFINITY, f32::NEG_INFINITY, true);
        let mut scaled = [0.0f32; 4 * LANES];
        for w in w.chunks(scaled.len()) {
            for (v, &w) in scaled.iter_mut().zip(w) {
                *v = w * s[c];
            }
            let (lo, hi, finite) = chunk_min_max(&scaled[..w.len()]);
            *range = (range.0.min(lo), range.1.max(hi), range.2 && finite);
        }
    });
    ranges
}

/// `y = fake_quant(W · s)`, channel `c`'s qparams on row `c`.
pub fn forward(spec: &FakeQuantSpec, w: &[f32], s: &[f32], y: &mut [f32]) {
    let channels = spec.channels();
    let row = w.len() / s.len().max(1);
    let mut rows: Vec<&mut [f32]> = y.chunks_mut(row.max(1)).collect();
    for_each_row(w, &mut rows, |c, w, y| forward_row(channels[c], s[c], w, y));
}

/// `(dW, ds)` from `dy`: `grad` holds `dy` and becomes `dW`; returns `ds`.
pub fn backward(spec: &FakeQuantSpec, w: &[f32], s: &[f32], grad: &mut [f32]) -> Vec<f32> {
    let channels = spec.channels();
    let row = w.len() / s.len().max(1);
    let mut rows: Vec<(&mut [f32], f32)> = grad.chunks_mut(row.max(1)).map(|g| (g, 0.0)).collect();
    for_each_row(w, &mut rows, |c, w, (grad, ds)| {
        *ds = backward_row(channels[c], s[c], w, grad)
    });
    rows.into_iter().map(|(_, ds)| ds).collect()
}

dispatch_avx2! {
    /// One row of [`forward`].
    fn forward_row / forward_row_portable(ch: Channel, s: f32, w: &[f32], y: &mut [f32]) {
        for (y, &w) in y.iter_mut().zip(w) {
            *y = ch.apply(w * s).0;
        }
    }
}

dispatch_avx2! {
    /// One row of [`backward`]: `grad` becomes `dW`; returns `ds`. The mask is ANDed in (see
    /// `fake_quant_kernels::backward_run`: a select here compiles to slow masked stores).
    fn backward_row / backward_row_portable(ch: Channel, s: f32, w: &[f32], grad: &mut [f32]) -> f32 {
        let mut lanes = [0.0f32; LANES];
        for (grad, w) in grad.chunks_mut(LANES).zip(w.chunks(LANES)) {
            for (l, (g, &w)) in grad.iter_mut().zip(w).enumerate() {
                let keep = (ch.apply(w * s).1 as u32).wrapping_neg();
                let masked = f32::from_bits(g.to_bits() & keep);
                lanes[l] += masked * w;
                *g = masked * s;
            }
        }
        lanes.iter().map(|&v| v as f64).sum::<f64>() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fake_quant_kernels;
    use crate::ops::min_max::min_max_kernel;

    /// A per-channel spec and weights whose scaled values land on rounding ties, their ulp
    /// neighbours, the clamp edges and beyond, with a negative, a zero and a tiny `s` among the
    /// channel scales; rows long enough to span several parallel tasks and not a multiple of the
    /// vector width.
    fn case() -> (FakeQuantSpec, Vec<f32>, Vec<f32>) {
        let (rows, row) = (37usize, 1031usize);
        let s: Vec<f32> = (0..rows)
            .map(|c| match c {
                3 => -0.75,
                5 => 0.0,
                7 => 1e-30,
                _ => 0.5 + c as f32 * 0.031,
            })
            .collect();
        let spec = FakeQuantSpec {
            scale: (0..rows).map(|c| 0.01 + c as f32 * 1e-3).collect(),
            zero_point: (0..rows).map(|c| (c % 5) as i64 - 2).collect(),
            inner: row,
            quant_min: -128,
            quant_max: 127,
            relu: false,
        };
        let mut w = Vec::with_capacity(rows * row);
        for (&q, &s) in spec.scale.iter().zip(&s) {
            for k in 0..row {
                let tie = ((k % 300) as f32 - 150.0 + 0.5) * q / s.abs().max(1e-3);
                w.push(match k % 4 {
                    0 => tie,
                    1 => tie.next_up(),
                    2 => tie.next_down(),
                    _ => ((k * 7919) % 1013) as f32 * 0.003 - 1.5,
                });
            }
        }
        (spec, w, s)
    }

    fn scaled(w: &[f32], s: &[f32]) -> Vec<f32> {
        let row = w.len() / s.len();
        w.iter().enumerate().map(|(i, &v)| v * s[i / row]).collect()
    }

    /// Forward, `dW` and the ranges equal the unfused path's (`W · s`, then the per-channel
    /// fake-quant kernels) bit for bit; `ds` equals `Σ g · W` to f32 rounding.
    #[test]
    fn fused_rows_match_scale_then_fake_quant() {
        let (spec, w, s) = case();
        let v = scaled(&w, &s);
        let n = w.len();
        let row = n / s.len();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();

        let (mut fused, mut unfused) = (vec![0.0; n], vec![0.0; n]);
        forward(&spec, &w, &s, &mut fused);
        fake_quant_kernels::forward(&spec, &v, &mut unfused);
        assert_eq!(bits(&fused), bits(&unfused), "forward");

        let dy: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.25 - 11.0).collect();
        let mut dw = dy.clone();
        let ds = backward(&spec, &w, &s, &mut dw);
        let mut g = dy;
        fake_quant_kernels::backward(&spec, &v, &mut g);
        let want_dw: Vec<f32> = g.iter().enumerate().map(|(i, &g)| g * s[i / row]).collect();
        assert_eq!(bits(&dw), bits(&want_dw), "dW");
        for c in 0..s.len() {
            let want: f64 = (0..row)
                .map(|k| g[c * row + k] as f64 * w[c * row + k] as f64)
                .sum();
            let tol = 1e-5 * want.abs().max(1.0);
            assert!(
                (ds[c] as f64 - want).abs() <= tol,
                "ds[{c}] {} vs {want}",
                ds[c]
            );
        }

        let ranges = min_max(&w, &s);
        for c in 0..s.len() {
            let want = min_max_kernel(&v[c * row..(c + 1) * row]);
            assert_eq!(
                format!("{:?}", ranges[c]),
                format!("{want:?}"),
                "range of row {c}"
            );
        }
        let mut bad = w.clone();
        bad[4 * row + 17] = f32::NAN;
        assert!(!min_max(&bad, &s)[4].2, "NaN in row 4");
        assert!(min_max(&bad, &s)[5].2, "row 5 is finite");
    }

    /// The dispatched (AVX2 where the CPU has it) and the portable row kernels agree bit for bit.
    #[test]
    fn dispatched_rows_match_the_portable_build_bit_for_bit() {
        let (spec, w, s) = case();
        let channels = spec.channels();
        let row = w.len() / s.len();
        for c in [0, 3, 5, 7, 20] {
            let w = &w[c * row..(c + 1) * row];
            let (mut fast, mut portable) = (vec![0.0; row], vec![0.0; row]);
            forward_row(channels[c], s[c], w, &mut fast);
            forward_row_portable(channels[c], s[c], w, &mut portable);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&portable), "forward row {c}");
            let dy: Vec<f32> = (0..row).map(|i| i as f32 * 0.5 - 100.0).collect();
            let (mut fast, mut portable) = (dy.clone(), dy);
            let a = backward_row(channels[c], s[c], w, &mut fast);
            let b = backward_row_portable(channels[c], s[c], w, &mut portable);
            assert_eq!(bits(&fast), bits(&portable), "dW row {c}");
            assert_eq!(a.to_bits(), b.to_bits(), "ds row {c}");
        }
    }
}
