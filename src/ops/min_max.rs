//! A tensor's minimum, maximum and finiteness in one pass, whole or per channel of axis 0 (what a
//! min/max observer reads per batch: PyTorch's `torch.aminmax`), on the `flex` CPU backend. The observer's composition of
//! Burn ops reads the batch three times (a `0·x` sum that turns NaN/inf into a non-zero, then
//! `min`, then `max`) and allocates a full-size temporary; this reads it once.
//!
//! `quant`'s observers take it on flex devices; elsewhere (wgpu, CUDA) they keep the
//! composition, so this extension lists only `Flex` and `Autodiff` (it carries no gradient).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::lanes::LANES;
use super::simd::dispatch_avx2;
use super::{TASK_VALUES, task_len};

/// `[min, max, finite]` of each of a tensor's `rows` equal row-major runs (`finite` is 1 or 0):
/// the whole tensor for `rows = 1`, each channel of axis 0 (a per-channel weight observer's
/// ranges) for `rows = dims[0]`.
#[backend_extension(Flex, Autodiff)]
pub trait MinMaxBackend: Backend {
    /// `[min, max, finite]` per row, as a rank-1 tensor of `3 · rows` values.
    fn min_max(x: FloatTensor<Self>, rows: usize) -> FloatTensor<Self>;
}

/// Minimum, maximum and whether every value is finite, over `x` (non-empty for a meaningful
/// range: an empty slice gives `(+inf, −inf, true)`). Min and max ignore NaN; `finite` is false
/// if any value is NaN or ±inf.
pub fn min_max_kernel(x: &[f32]) -> (f32, f32, bool) {
    x.par_chunks(TASK_VALUES).map(chunk_min_max).reduce(
        || (f32::INFINITY, f32::NEG_INFINITY, true),
        |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 && b.2),
    )
}

dispatch_avx2! {
    /// One chunk, in independent lanes so that it vectorises.
    pub(super) fn chunk_min_max / chunk_min_max_portable(x: &[f32]) -> (f32, f32, bool) {
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
    use rayon::prelude::*;

    use super::super::flex_io::{tensor, values};
    use super::{MinMaxBackend, chunk_min_max, min_max_kernel, task_len};

    impl MinMaxBackend for Flex {
        fn min_max(x: FlexTensor, rows: usize) -> FlexTensor {
            let x = values(&x);
            let ranges = if rows <= 1 {
                vec![min_max_kernel(&x)]
            } else {
                let row = x.len().div_ceil(rows);
                x.par_chunks(task_len(row))
                    .flat_map_iter(|task| task.chunks(row).map(chunk_min_max))
                    .collect()
            };
            let flat: Vec<f32> = ranges
                .iter()
                .flat_map(|&(lo, hi, finite)| [lo, hi, if finite { 1.0 } else { 0.0 }])
                .collect();
            let n = flat.len();
            tensor(flat, [n])
        }
    }
}

impl<B: Backend + MinMaxBackend, C: CheckpointStrategy> MinMaxBackend for Autodiff<B, C> {
    fn min_max(x: FloatTensor<Self>, rows: usize) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(<B as MinMaxBackend>::min_max(
            <Self as AutodiffBackend>::inner(x),
            rows,
        ))
    }
}

/// Per-channel `(min, max, all finite)` along axis 0 of a non-empty `f32` tensor on a device
/// where [`super::has_cpu_kernels`] holds; `rows` is `dims[0]` (1 for the whole tensor).
pub(crate) fn min_max_rows<const D: usize>(
    x: &Tensor<D>,
    rows: usize,
) -> (Vec<f32>, Vec<f32>, bool) {
    let t: Tensor<1> = Tensor::from_dispatch(<Dispatch as MinMaxBackend>::min_max(
        x.clone().into_dispatch(),
        rows,
    ));
    split_ranges(
        crate::state::host_read::read(t)
            .try_to_vec::<f32>()
            .expect("the min/max op returns f32 values"),
    )
}

/// `[min, max, finite]` triples as `(mins, maxes, all finite)`.
pub(super) fn split_ranges(v: Vec<f32>) -> (Vec<f32>, Vec<f32>, bool) {
    let lo = v.iter().step_by(3).copied().collect();
    let hi = v.iter().skip(1).step_by(3).copied().collect();
    (lo, hi, v.iter().skip(2).step_by(3).all(|&f| f == 1.0))
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

    /// Per-channel ranges along axis 0 through the flex op: each row's own min and max.
    #[test]
    fn rows_are_the_channels_of_axis_zero() {
        use burn::tensor::{Device, Tensor, TensorData};
        let (rows, cols) = (5, 37);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 211) as f32 * 0.5 - 40.0)
            .collect();
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = Tensor::<2>::from_data(TensorData::new(v.clone(), [rows, cols]), &device);
            let (lo, hi, finite) = super::min_max_rows(&x, rows);
            assert!(finite);
            for (r, row) in v.chunks(cols).enumerate() {
                assert_eq!(lo[r], row.iter().copied().fold(f32::INFINITY, f32::min));
                assert_eq!(hi[r], row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            }
            let mut bad = v.clone();
            bad[3 * cols + 4] = f32::NAN;
            let x = Tensor::<2>::from_data(TensorData::new(bad, [rows, cols]), &device);
            assert!(!super::min_max_rows(&x, rows).2);
        }
    }
}
