//! Training-mode batch norm on contiguous `[N, C, L]` `f32` slices (`L` = the spatial size, 1
//! for `BatchNorm1d`): the forward pass with the batch statistics, and the backward pass — what
//! `torch.nn.functional.batch_norm(..., training=True)` and its autograd compute.
//!
//! With `M = N·L` values per channel, `μ = Σx / M`, `σ² = Σ(x − μ)² / M` (biased, as PyTorch
//! normalises), `k = γ / √(σ² + ε)` and `x̂ = (x − μ) / √(σ² + ε)`:
//! - forward: `y = (x − μ) · k + β`;
//! - backward: `∂β = Σ dy`, `∂γ = Σ dy · x̂`, `∂x = k · (dy − ∂β / M − x̂ · ∂γ / M)`.
//!
//! Channel sums accumulate in `f64`, so the statistics are at least as accurate as a composition of
//! `f32` means; each pass is one read of the data, where the composed version makes about ten
//! full-size temporaries in the forward pass and as many in the backward pass.

use rayon::prelude::*;

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

    /// The `L` values of channel `c` in sample `n`.
    fn row<'a>(&self, t: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let start = (n * self.channels + c) * self.inner;
        &t[start..start + self.inner]
    }

    /// `Σ_n Σ_l f(row(a), row(b))` for channel `c`, in `f64`.
    fn channel_sum(&self, c: usize, f: impl Fn(usize) -> f64) -> f64 {
        (0..self.batch).map(|n| f(n * self.channels + c)).sum()
    }
}

/// The per-channel `scale = γ / √(σ² + ε)`, in `f32` as [`crate::nn::BatchNorm2d::normalize`]
/// computes it (reciprocal of the root, times γ).
fn scale(var: f32, gamma: f32, eps: f32) -> f32 {
    (var + eps).sqrt().recip() * gamma
}

/// Forward pass: writes `y` and returns the batch mean and biased variance per channel.
pub fn forward(
    g: &BatchNormGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let m = g.per_channel() as f64;
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let sum = g.channel_sum(c, |plane| {
                let row = &x[plane * g.inner..(plane + 1) * g.inner];
                row.iter().map(|&v| v as f64).sum()
            });
            let mean = sum / m;
            let sq = g.channel_sum(c, |plane| {
                let row = &x[plane * g.inner..(plane + 1) * g.inner];
                row.iter().map(|&v| (v as f64 - mean).powi(2)).sum()
            });
            (mean as f32, (sq / m) as f32)
        })
        .unzip();
    y.par_chunks_mut(g.inner.max(1))
        .enumerate()
        .for_each(|(plane, y)| {
            let c = plane % g.channels;
            let (mu, k, b) = (mean[c], scale(var[c], gamma[c], eps), beta[c]);
            let x = g.row(x, plane / g.channels, c);
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x - mu) * k + b;
            }
        });
    (mean, var)
}

/// Backward pass: writes `dx` and returns `(∂γ, ∂β)`; `mean`/`var` are the forward pass's batch
/// statistics.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &BatchNormGeometry,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    dy: &[f32],
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let inv_std: Vec<f32> = var.iter().map(|&v| (v + eps).sqrt().recip()).collect();
    let (dgamma, dbeta): (Vec<f64>, Vec<f64>) = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let (mu, is) = (mean[c], inv_std[c]);
            let row_sums = |plane: usize| {
                let rows = plane * g.inner..(plane + 1) * g.inner;
                x[rows.clone()]
                    .iter()
                    .zip(&dy[rows])
                    .fold((0.0f64, 0.0f64), |(sg, sb), (&x, &d)| {
                        (sg + (d * ((x - mu) * is)) as f64, sb + d as f64)
                    })
            };
            (0..g.batch)
                .map(|n| row_sums(n * g.channels + c))
                .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
        })
        .unzip();
    let m = g.per_channel() as f64;
    dx.par_chunks_mut(g.inner.max(1))
        .enumerate()
        .for_each(|(plane, dx)| {
            let (n, c) = (plane / g.channels, plane % g.channels);
            let (mu, is) = (mean[c], inv_std[c]);
            let k = scale(var[c], gamma[c], eps);
            let (db, dg) = ((dbeta[c] / m) as f32, (dgamma[c] / m) as f32);
            for ((dx, &x), &d) in dx.iter_mut().zip(g.row(x, n, c)).zip(g.row(dy, n, c)) {
                *dx = k * (d - db - (x - mu) * is * dg);
            }
        });
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect();
    (to_f32(dgamma), to_f32(dbeta))
}
