//! A tensor's minimum, maximum and finiteness in one pass (what a min/max observer reads per
//! batch: PyTorch's `torch.aminmax`), on the `flex` CPU backend. The observer's composition of
//! Burn ops reads the batch three times (a `0·x` sum that turns NaN/inf into a non-zero, then
//! `min`, then `max`) and allocates a full-size temporary; this reads it once.
//!
//! [`crate::quant`]'s observers take it on flex devices; elsewhere (wgpu, CUDA) they keep the
//! composition, so this extension lists only `Flex` and `Autodiff` (it carries no gradient).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::lanes::LANES;
use super::simd::dispatch_avx2;

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// `[min, max, finite]` of a tensor (`finite` is 1 or 0).
#[backend_extension(Flex, Autodiff)]
pub trait MinMaxBackend: Backend {
    /// `[min, max, finite]` as a rank-1 tensor of 3 values.
    fn min_max(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Minimum, maximum and whether every value is finite, over `x` (non-empty for a meaningful
/// range: an empty slice gives `(+inf, −inf, true)`). Min and max ignore NaN; `finite` is false
/// if any value is NaN or ±inf.
pub fn min_max_kernel(x: &[f32]) -> (f32, f32, bool) {
    x.par_chunks(CHUNK).map(chunk_min_max).reduce(
        || (f32::INFINITY, f32::NEG_INFINITY, true),
        |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 && b.2),
    )
}

dispatch_avx2! {
    /// One chunk, in independent lanes so that it vectorises.
    fn chunk_min_max / chunk_min_max_portable(x: &[f32]) -> (f32, f32, bool) {
        let mut lo = [f32::INFINITY; LANES];
        let mut hi = [f32::NEG_INFINITY; LANES];
        // `0·v` is 0 for finite v and NaN otherwise; the sum stays 0 only if all were finite.
        let mut probe = [0.0f32; LANES];
        let body = x.len() - x.len() % LANES;
        for v in x[..body].chunks_exact(LANES) {
            for l in 0..LANES {
                lo[l] = lo[l].min(v[l]);
                hi[l] = hi[l].max(v[l]);
                probe[l] += 0.0 * v[l];
            }
        }
        let tail = &x[body..];
        let lo = lo.iter().chain(tail).fold(f32::INFINITY, |a, &b| a.min(b));
        let hi = hi
            .iter()
            .chain(tail)
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let probe: f32 = probe.iter().sum::<f32>() + tail.iter().map(|&v| 0.0 * v).sum::<f32>();
        (lo, hi, probe == 0.0)
    }
}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;

    use super::super::flex_io::{tensor, values};
    use super::{MinMaxBackend, min_max_kernel};

    impl MinMaxBackend for Flex {
        fn min_max(x: FlexTensor) -> FlexTensor {
            let (lo, hi, finite) = min_max_kernel(&values(&x));
            tensor(vec![lo, hi, if finite { 1.0 } else { 0.0 }], [3])
        }
    }
}

impl<B: Backend + MinMaxBackend, C: CheckpointStrategy> MinMaxBackend for Autodiff<B, C> {
    fn min_max(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(<B as MinMaxBackend>::min_max(
            <Self as AutodiffBackend>::inner(x),
        ))
    }
}

/// `(min, max, finite)` of an `f32` tensor on a device where [`super::has_cpu_kernels`] holds.
pub(crate) fn min_max<const D: usize>(x: &Tensor<D>) -> (f32, f32, bool) {
    let t: Tensor<1> = Tensor::from_dispatch(<Dispatch as MinMaxBackend>::min_max(
        x.clone().into_dispatch(),
    ));
    let v = t
        .into_data()
        .try_to_vec::<f32>()
        .expect("the min/max op returns f32 values");
    (v[0], v[1], v[2] == 1.0)
}

#[cfg(test)]
mod tests {
    use super::{chunk_min_max, chunk_min_max_portable, min_max_kernel};

    #[test]
    fn one_pass_matches_the_definition() {
        for n in [1usize, 15, 16, 17, 1000, 70_001] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0)
                .collect();
            let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(min_max_kernel(&x), (lo, hi, true), "n = {n}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, n / 2, n - 1] {
                    let mut y = x.clone();
                    y[at] = bad;
                    assert!(!min_max_kernel(&y).2, "n = {n}, {bad} at {at}");
                    assert_eq!(
                        format!("{:?}", chunk_min_max(&y)),
                        format!("{:?}", chunk_min_max_portable(&y)),
                        "dispatched vs portable build, n = {n}, {bad} at {at}"
                    );
                }
            }
            assert_eq!(chunk_min_max(&x), chunk_min_max_portable(&x), "n = {n}");
        }
    }
}
