//! Training-mode batch norm on contiguous `[N, C, L]` `f32` slices (`L` = the spatial size, 1
//! for `BatchNorm1d`): the forward pass with the batch statistics, and the backward pass — what
//! `torch.nn.functional.batch_norm(..., training=True)` and its autograd compute.
//!
//! With `M = N·L` values per channel, `μ = Σx / M`, `σ² = Σ(x − μ)² / M` (biased, as PyTorch
//! normalises), `k = γ / √(σ² + ε)` and `x̂ = (x − μ) / √(σ² + ε)`:
//! - forward: `y = (x − μ) · k + β`;
//! - backward: `∂β = Σ dy`, `∂γ = Σ dy · x̂`, `∂x = k · (dy − ∂β / M − x̂ · ∂γ / M)`.
//!
//! The input may come with a per-channel divisor `d`: the layer then normalises `x / d` without
//! materialising it (QAT ConvBn's `conv(x, W·s) / s`, `_ConvBnNd._forward_approximate`), and the
//! backward pass returns `∂(conv) = ∂x' / d` and `∂d = −Σ ∂x' · x' / d` (x' = x / d) from the same
//! pass over the data. `d = 1` costs nothing: those rows take the undivided loops.
//!
//! Channel sums run in 16 `f32` lanes per row and add up rows in `f64`; each pass is one read of the data, where the composed version makes about ten
//! full-size temporaries in the forward pass and as many in the backward pass.

use rayon::prelude::*;

use super::lanes::{lane_sum, lane_sum_of};
use super::simd::dispatch_avx2;
use super::task_len;

/// `[N, C, L]`: batch, channels, values per channel and sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchNormGeometry {
    /// Batch size.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Values per channel and sample (`H·W` for images).
    pub inner: usize,
}

impl BatchNormGeometry {
    /// Values per channel, `M = N·L`.
    pub fn per_channel(&self) -> usize {
        self.batch * self.inner
    }

    /// `f(plane, values)` over the planes (`L` values of one sample and channel) of `out`, in
    /// parallel with whole planes per task; `f`'s results in plane order.
    fn map_planes<R: Default + Clone + Send>(
        &self,
        out: &mut [f32],
        f: impl Fn(usize, &mut [f32]) -> R + Sync,
    ) -> Vec<R> {
        let inner = self.inner.max(1);
        let per_task = task_len(inner) / inner;
        let mut results = vec![R::default(); self.batch * self.channels];
        out.par_chunks_mut(per_task * inner)
            .zip(results.par_chunks_mut(per_task))
            .enumerate()
            .for_each(|(task, (out, results))| {
                for (i, (row, r)) in out.chunks_mut(inner).zip(results).enumerate() {
                    *r = f(task * per_task + i, row);
                }
            });
        results
    }

    /// The `L` values of channel `c` in sample `n`.
    fn row<'a>(&self, t: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let start = (n * self.channels + c) * self.inner;
        &t[start..start + self.inner]
    }
}

/// The per-channel `scale = γ / √(σ² + ε)`, in `f32` as `nn::BatchNorm2d::normalize`
/// computes it (reciprocal of the root, times γ).
fn scale(var: f32, gamma: f32, eps: f32) -> f32 {
    (var + eps).sqrt().recip() * gamma
}

/// Evaluates `body` with `input` bound to the map from a stored value to the normalised input,
/// `v ↦ v / d`, or the identity when `d = 1` so that plain batch norm keeps its division-free
/// loops (each branch is its own monomorphised kernel).
macro_rules! with_divisor {
    ($d:expr, |$input:ident| $body:expr) => {{
        let d: f32 = $d;
        if d == 1.0 {
            let $input = |v: f32| v;
            $body
        } else {
            let $input = move |v: f32| v / d;
            $body
        }
    }};
}

/// Forward pass of batch norm over `x / divisor` (per channel): writes `y` and returns the batch
/// mean and biased variance of `x / divisor` per channel.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    g: &BatchNormGeometry,
    x: &[f32],
    divisor: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let m = g.per_channel() as f64;
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..g.channels)
        .into_par_iter()
        .map(|c| channel_moments(g, x, c, m, divisor[c]))
        .unzip();
    let k: Vec<f32> = (0..g.channels)
        .map(|c| scale(var[c], gamma[c], eps))
        .collect();
    g.map_planes(y, |plane, y| {
        let c = plane % g.channels;
        let x = g.row(x, plane / g.channels, c);
        normalize_row(x, divisor[c], mean[c], k[c], beta[c], y);
    });
    (mean, var)
}

dispatch_avx2! {
    /// Batch mean and biased variance of channel `c` (`m` values of `x / d`), two passes.
    fn channel_moments / channel_moments_portable(
        g: &BatchNormGeometry,
        x: &[f32],
        c: usize,
        m: f64,
        d: f32,
    ) -> (f32, f32) {
        with_divisor!(d, |input| {
            let rows = || (0..g.batch).map(|n| g.row(x, n, c));
            let sum: f64 = rows().map(|r| lane_sum_of(r, input)).sum();
            let mean = (sum / m) as f32;
            let sq: f64 = rows()
                .map(|r| lane_sum_of(r, |v| (input(v) - mean) * (input(v) - mean)))
                .sum();
            (mean, (sq / m) as f32)
        })
    }
}

dispatch_avx2! {
    /// `y = (x / d − μ) · k + β` over one row.
    fn normalize_row / normalize_row_portable(x: &[f32], d: f32, mu: f32, k: f32, b: f32, y: &mut [f32]) {
        with_divisor!(d, |input| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (input(x) - mu) * k + b;
            }
        })
    }
}

/// The backward pass's results: `∂x` is written in place; these are the per-channel ones.
#[derive(Debug)]
pub struct ChannelGrads {
    /// `∂γ`.
    pub gamma: Vec<f32>,
    /// `∂β`.
    pub beta: Vec<f32>,
    /// `∂d`, when asked for.
    pub divisor: Option<Vec<f32>>,
}

/// Backward pass: writes `dx` (the gradient of the undivided input) and returns the per-channel
/// gradients; `mean`/`var` are the forward pass's batch statistics. `divisor_grad` asks for `∂d`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &BatchNormGeometry,
    x: &[f32],
    divisor: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    dy: &[f32],
    dx: &mut [f32],
    divisor_grad: bool,
) -> ChannelGrads {
    let inv_std: Vec<f32> = var.iter().map(|&v| (v + eps).sqrt().recip()).collect();
    let (dgamma, dbeta): (Vec<f64>, Vec<f64>) = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let (mu, is) = (mean[c], inv_std[c]);
            channel_grad_sums(g, x, dy, c, mu, is, divisor[c])
        })
        .unzip();
    let m = g.per_channel() as f64;
    // `[μ, 1/σ, k, ∂β/M, ∂γ/M]` per channel, once (a 1×1 map has one value per plane).
    let coefficients: Vec<[f32; 5]> = (0..g.channels)
        .map(|c| {
            let k = scale(var[c], gamma[c], eps);
            let (db, dg) = ((dbeta[c] / m) as f32, (dgamma[c] / m) as f32);
            [mean[c], inv_std[c], k, db, dg]
        })
        .collect();
    // Writes one plane's ∂x; returns Σ ∂x' · x' (0 for undivided rows), folded into ∂d below.
    let plane_grad = |plane: usize, dx: &mut [f32]| {
        let (n, c) = (plane / g.channels, plane % g.channels);
        let (x, dy) = (g.row(x, n, c), g.row(dy, n, c));
        let d = divisor[c];
        if d == 1.0 && !divisor_grad {
            input_grad_row(x, dy, coefficients[c], dx);
            0.0
        } else {
            divided_input_grad_row(x, dy, coefficients[c], d, dx)
        }
    };
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect();
    if !divisor_grad {
        // No per-plane sums collected (a `()` per plane allocates nothing).
        g.map_planes(dx, |plane, dx| {
            plane_grad(plane, dx);
        });
        return ChannelGrads {
            gamma: to_f32(dgamma),
            beta: to_f32(dbeta),
            divisor: None,
        };
    }
    let plane_sums = g.map_planes(dx, plane_grad);
    let ddivisor = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = (0..g.batch).map(|n| plane_sums[n * g.channels + c]).sum();
            (-sum / divisor[c] as f64) as f32
        })
        .collect();
    ChannelGrads {
        gamma: to_f32(dgamma),
        beta: to_f32(dbeta),
        divisor: Some(ddivisor),
    }
}

dispatch_avx2! {
    /// `(∂γ, ∂β)` of channel `c`: `Σ dy · x̂` (`x̂` from `x / d`) and `Σ dy`.
    fn channel_grad_sums / channel_grad_sums_portable(
        g: &BatchNormGeometry,
        x: &[f32],
        dy: &[f32],
        c: usize,
        mu: f32,
        inv_std: f32,
        d: f32,
    ) -> (f64, f64) {
        with_divisor!(d, |input| {
            (0..g.batch)
                .map(|n| {
                    let (x, dy) = (g.row(x, n, c), g.row(dy, n, c));
                    let dgamma = lane_sum(dy, x, |d, x| d * ((input(x) - mu) * inv_std));
                    (dgamma, lane_sum_of(dy, |d| d))
                })
                .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
        })
    }
}

dispatch_avx2! {
    /// `∂x = k · (dy − ∂β/M − x̂ · ∂γ/M)` over one row; `[μ, 1/σ, k, ∂β/M, ∂γ/M]`.
    fn input_grad_row / input_grad_row_portable(
        x: &[f32],
        dy: &[f32],
        coefficients: [f32; 5],
        dx: &mut [f32],
    ) {
        let [mu, inv_std, k, db, dg] = coefficients;
        for ((dx, &x), &d) in dx.iter_mut().zip(x).zip(dy) {
            *dx = k * (d - db - (x - mu) * inv_std * dg);
        }
    }
}

dispatch_avx2! {
    /// [`input_grad_row`] for the input `x / d`: writes `∂x = ∂x' / d` and returns `Σ ∂x' · x'`.
    fn divided_input_grad_row / divided_input_grad_row_portable(
        x: &[f32],
        dy: &[f32],
        coefficients: [f32; 5],
        d: f32,
        dx: &mut [f32],
    ) -> f64 {
        let [mu, inv_std, k, db, dg] = coefficients;
        const LANES: usize = 16;
        // Multiplications by 1/d: within an ulp of the divisions, and several times cheaper.
        let inv_d = d.recip();
        let grad = |x: f32, g: f32| {
            let xs = x * inv_d;
            let dxs = k * (g - db - (xs - mu) * inv_std * dg);
            (dxs * inv_d, dxs * xs)
        };
        let mut lanes = [0.0f32; LANES];
        let body = x.len() - x.len() % LANES;
        for ((dx, x), dy) in dx[..body]
            .chunks_exact_mut(LANES)
            .zip(x[..body].chunks_exact(LANES))
            .zip(dy[..body].chunks_exact(LANES))
        {
            for l in 0..LANES {
                let (v, s) = grad(x[l], dy[l]);
                dx[l] = v;
                lanes[l] += s;
            }
        }
        let mut tail = 0.0f64;
        for ((dx, &x), &g) in dx[body..].iter_mut().zip(&x[body..]).zip(&dy[body..]) {
            let (v, s) = grad(x, g);
            *dx = v;
            tail += s as f64;
        }
        lanes.iter().map(|&v| v as f64).sum::<f64>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched (AVX2 where the CPU has it) and the portable builds of every row and
    /// channel kernel agree bit for bit, with and without a divisor.
    #[test]
    fn dispatched_kernels_match_the_portable_build_bit_for_bit() {
        let g = BatchNormGeometry {
            batch: 3,
            channels: 2,
            inner: 37,
        };
        let val = |i: usize, k: u32| {
            ((i as u32).wrapping_mul(2_654_435_761 ^ k) >> 8) as f32 * 1.3e-7 - 0.9
        };
        let len = g.batch * g.channels * g.inner;
        let x: Vec<f32> = (0..len).map(|i| val(i, 1)).collect();
        let dy: Vec<f32> = (0..len).map(|i| val(i, 2)).collect();
        let m = g.per_channel() as f64;
        let coefficients = [0.1, 1.3, 0.7, -0.02, 0.05];
        for d in [1.0f32, 1.7, 0.3] {
            for c in 0..g.channels {
                assert_eq!(
                    channel_moments(&g, &x, c, m, d),
                    channel_moments_portable(&g, &x, c, m, d)
                );
                assert_eq!(
                    channel_grad_sums(&g, &x, &dy, c, 0.1, 1.3, d),
                    channel_grad_sums_portable(&g, &x, &dy, c, 0.1, 1.3, d)
                );
            }
            let (row, drow) = (&x[..g.inner], &dy[..g.inner]);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let (mut a, mut b) = (vec![0.0; g.inner], vec![0.0; g.inner]);
            normalize_row(row, d, 0.1, 0.7, 0.2, &mut a);
            normalize_row_portable(row, d, 0.1, 0.7, 0.2, &mut b);
            assert_eq!(bits(&a), bits(&b), "normalize_row, d = {d}");
            input_grad_row(row, drow, coefficients, &mut a);
            input_grad_row_portable(row, drow, coefficients, &mut b);
            assert_eq!(bits(&a), bits(&b), "input_grad_row");
            let sa = divided_input_grad_row(row, drow, coefficients, d, &mut a);
            let sb = divided_input_grad_row_portable(row, drow, coefficients, d, &mut b);
            assert_eq!(
                (bits(&a), sa.to_bits()),
                (bits(&b), sb.to_bits()),
                "divided, d = {d}"
            );
        }
    }
}
