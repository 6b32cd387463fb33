//! Training-mode batch norm on contiguous `[N, C, L]` `f32` slices (`L` = the spatial size, 1
//! for `BatchNorm1d`): the forward pass with the batch statistics, and the backward pass — what
//! `torch.nn.functional.batch_norm(..., training=True)` and its autograd compute.
//!
//! With `M = N·L` values per channel, `μ = Σx / M`, `σ² = Σ(x − μ)² / M` (biased, as PyTorch
//! normalises), `k = γ / √(σ² + ε)` and `x̂ = (x − μ) / √(σ² + ε)`:
//! - forward: `y = (x − μ) · k + β`;
//! - backward: `∂β = Σ dy`, `∂γ = Σ dy · x̂`, `∂x = k · (dy − ∂β / M − x̂ · ∂γ / M)`.
//!
//! Channel sums run in 16 `f32` lanes per row and add up rows in `f64`; each pass is one read of the data, where the composed version makes about ten
//! full-size temporaries in the forward pass and as many in the backward pass.

use rayon::prelude::*;

use super::lanes::{lane_sum, lane_sum_of};

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
        .map(|c| channel_moments(g, x, c, m))
        .unzip();
    y.par_chunks_mut(g.inner.max(1))
        .enumerate()
        .for_each(|(plane, y)| {
            let c = plane % g.channels;
            let (mu, k, b) = (mean[c], scale(var[c], gamma[c], eps), beta[c]);
            normalize_row(g.row(x, plane / g.channels, c), mu, k, b, y);
        });
    (mean, var)
}

/// Batch mean and biased variance of channel `c` (`m` values), two passes.
#[inline(never)]
fn channel_moments(g: &BatchNormGeometry, x: &[f32], c: usize, m: f64) -> (f32, f32) {
    let rows = || (0..g.batch).map(|n| g.row(x, n, c));
    let sum: f64 = rows().map(|r| lane_sum_of(r, |v| v)).sum();
    let mean = (sum / m) as f32;
    let sq: f64 = rows()
        .map(|r| lane_sum_of(r, |v| (v - mean) * (v - mean)))
        .sum();
    (mean, (sq / m) as f32)
}

/// `y = (x − μ) · k + β` over one row.
#[inline(never)]
fn normalize_row(x: &[f32], mu: f32, k: f32, b: f32, y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = (x - mu) * k + b;
    }
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
        .map(|c| channel_grad_sums(g, x, dy, c, mean[c], inv_std[c]))
        .unzip();
    let m = g.per_channel() as f64;
    dx.par_chunks_mut(g.inner.max(1))
        .enumerate()
        .for_each(|(plane, dx)| {
            let (n, c) = (plane / g.channels, plane % g.channels);
            let (mu, is) = (mean[c], inv_std[c]);
            let k = scale(var[c], gamma[c], eps);
            let (db, dg) = ((dbeta[c] / m) as f32, (dgamma[c] / m) as f32);
            input_grad_row(g.row(x, n, c), g.row(dy, n, c), [mu, is, k, db, dg], dx);
        });
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect();
    (to_f32(dgamma), to_f32(dbeta))
}

/// `(∂γ, ∂β)` of channel `c`: `Σ dy · x̂` and `Σ dy`.
#[inline(never)]
fn channel_grad_sums(
    g: &BatchNormGeometry,
    x: &[f32],
    dy: &[f32],
    c: usize,
    mu: f32,
    inv_std: f32,
) -> (f64, f64) {
    (0..g.batch)
        .map(|n| {
            let (x, dy) = (g.row(x, n, c), g.row(dy, n, c));
            let dgamma = lane_sum(dy, x, |d, x| d * ((x - mu) * inv_std));
            (dgamma, lane_sum_of(dy, |d| d))
        })
        .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
}

/// `∂x = k · (dy − ∂β/M − x̂ · ∂γ/M)` over one row; `[μ, 1/σ, k, ∂β/M, ∂γ/M]`.
#[inline(never)]
fn input_grad_row(x: &[f32], dy: &[f32], [mu, inv_std, k, db, dg]: [f32; 5], dx: &mut [f32]) {
    for ((dx, &x), &d) in dx.iter_mut().zip(x).zip(dy) {
        *dx = k * (d - db - (x - mu) * inv_std * dg);
    }
}
