//! Inference max pooling on contiguous NCHW `f32` slices, PyTorch's `nn.MaxPool2d` (dilation 1):
//! `y[n,c,oh,ow] = max_{i,j} x[n,c,oh·sh+i−ph, ow·sw+j−pw]` over the window's positions inside
//! the input, NaN winning as in PyTorch.
//!
//! Burn's flex pooling finds each output's window bounds and index one value at a time (an
//! eighth of ResNet-18's batch-1 forward for its one 3×3/2 pool). This is the depthwise
//! inference kernel's layout ([`super::depthwise_inference`]) with `−∞` padding (which never
//! wins) and a maximum instead of a weighted sum: sixteen outputs at a time take the maximum of
//! all taps in registers.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::depthwise_inference::{BLOCK, Padded, Taps, pad_plane};
use super::depthwise_kernels::DepthwiseGeometry;
use super::simd::Isa;

/// `y = max_pool2d(x)`; `g.kernel`, `g.stride`, `g.padding` and `g.output` are the pool's (the
/// output rounded up or down as the caller's `ceil_mode` says); `y` is overwritten.
///
/// # Panics
/// If a slice's length does not match `g`.
pub fn forward(g: &DepthwiseGeometry, x: &[f32], y: &mut [f32]) {
    let ([h, w], [oh, ow]) = (g.input, g.output);
    let planes = g.batch * g.channels;
    assert_eq!(x.len(), planes * h * w, "input size");
    assert_eq!(y.len(), planes * oh * ow, "output size");
    let out_plane = oh * ow;
    if out_plane == 0 {
        return;
    }
    let layout = Padded::new(g);
    let taps = Taps::new(g, &layout);
    let isa = Isa::best();
    let per_task = (super::TASK_VALUES / out_plane).clamp(1, 64);
    y.par_chunks_mut(out_plane * per_task)
        .enumerate()
        .for_each(|(task, out)| {
            let mut buf = vec![0.0f32; layout.len(g)];
            for (i, out) in out.chunks_exact_mut(out_plane).enumerate() {
                let p = task * per_task + i;
                pad_plane(
                    g,
                    &layout,
                    &x[p * h * w..][..h * w],
                    f32::NEG_INFINITY,
                    &mut buf,
                );
                plane_at(isa, &taps, &buf, out);
            }
        });
}

/// One output plane from its `−∞`-padded input plane, built for `isa` (the reference where the
/// CPU lacks it).
fn plane_at(isa: Isa, taps: &Taps, buf: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: this CPU has AVX-512F (checked just above).
            return unsafe { x86::plane_avx512(taps, buf, out) };
        }
        if isa != Isa::Portable && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2 (checked just above).
            return unsafe { x86::plane_avx2(taps, buf, out) };
        }
    }
    let _ = isa;
    plane_portable(taps, buf, out)
}

/// Calls `$block(base, o, offsets, out)` for every block of `BLOCK` outputs of every output row
/// (whole blocks: the buffer's slack keeps the last one's reads inside).
macro_rules! for_each_block {
    ($taps:expr, $buf:expr, $out:expr, $block:path) => {{
        let [oh, ow] = $taps.output;
        for (r, out_row) in $out.chunks_exact_mut(ow).enumerate().take(oh) {
            let base = &$buf[r * $taps.row_step..];
            for (b, out) in out_row.chunks_mut(BLOCK).enumerate() {
                $block(base, b * BLOCK, &$taps.offsets, out);
            }
        }
    }};
}

/// The reference build.
fn plane_portable(taps: &Taps, buf: &[f32], out: &mut [f32]) {
    for_each_block!(taps, buf, out, block_portable);
}

/// One value's step: `x` wins when it is greater or NaN (a NaN maximum then stays, since
/// nothing compares greater than it), PyTorch's rule.
#[inline(always)]
fn step(acc: f32, x: f32) -> f32 {
    if x > acc || x.is_nan() { x } else { acc }
}

#[inline(always)]
fn block_portable(base: &[f32], o: usize, offsets: &[usize], out: &mut [f32]) {
    let mut acc = [f32::NEG_INFINITY; BLOCK];
    for &off in offsets {
        let src = &base[off + o..][..BLOCK];
        for l in 0..BLOCK {
            acc[l] = step(acc[l], src[l]);
        }
    }
    out.copy_from_slice(&acc[..out.len()]);
}

/// The vector builds: [`step`] lane by lane, as `(x > acc) | (x ≠ x)` selecting `x`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Taps};

    #[target_feature(enable = "avx512f")]
    pub(super) fn plane_avx512(taps: &Taps, buf: &[f32], out: &mut [f32]) {
        for_each_block!(taps, buf, out, block_avx512);
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn block_avx512(base: &[f32], o: usize, offsets: &[usize], out: &mut [f32]) {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        for &off in offsets {
            let src = &base[off + o..][..BLOCK];
            // SAFETY: `src` holds 16 values.
            let x = unsafe { _mm512_loadu_ps(src.as_ptr()) };
            let wins =
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, acc) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            acc = _mm512_mask_blend_ps(wins, acc, x);
        }
        let mut lanes = [0.0f32; BLOCK];
        // SAFETY: `lanes` holds 16 values.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        out.copy_from_slice(&lanes[..out.len()]);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn plane_avx2(taps: &Taps, buf: &[f32], out: &mut [f32]) {
        for_each_block!(taps, buf, out, block_avx2);
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn block_avx2(base: &[f32], o: usize, offsets: &[usize], out: &mut [f32]) {
        let mut acc = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
        for &off in offsets {
            let src = &base[off + o..][..BLOCK];
            for (h, a) in acc.iter_mut().enumerate() {
                // SAFETY: `src` holds 16 values.
                let x = unsafe { _mm256_loadu_ps(src.as_ptr().add(8 * h)) };
                let wins = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(x, *a),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x),
                );
                *a = _mm256_blendv_ps(*a, x, wins);
            }
        }
        let mut lanes = [0.0f32; BLOCK];
        // SAFETY: `lanes` holds 16 values.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        }
        out.copy_from_slice(&lanes[..out.len()]);
    }
}

/// Max pooling without indices or gradient, for the layers' inference forward on the CPU.
#[backend_extension(Flex, Autodiff)]
pub trait InferencePoolBackend: Backend {
    /// `max_pool2d(x)` with square-or-not `kernel`, `stride`, `padding` (dilation 1) and the
    /// output size `output` (the caller's rounding, `ceil_mode` or not).
    fn max_pool2d_inference(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        output: [usize; 2],
    ) -> FloatTensor<Self>;
}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::DType;

    use super::super::flex_io::{tensor, values};
    use super::{DepthwiseGeometry, InferencePoolBackend, forward};

    impl InferencePoolBackend for Flex {
        fn max_pool2d_inference(
            x: FlexTensor,
            kernel: [usize; 2],
            stride: [usize; 2],
            padding: [usize; 2],
            output: [usize; 2],
        ) -> FlexTensor {
            let s = x.layout().shape();
            assert!(
                s.num_dims() == 4 && x.dtype() == DType::F32,
                "an f32 [N, C, H, W] tensor"
            );
            let g = DepthwiseGeometry {
                batch: s[0],
                channels: s[1],
                input: [s[2], s[3]],
                output,
                kernel,
                stride,
                padding,
            };
            let mut y = vec![0.0f32; g.batch * g.channels * output[0] * output[1]];
            forward(&g, &values(&x), &mut y);
            tensor(y, [g.batch, g.channels, output[0], output[1]])
        }
    }
}

impl<B: Backend + InferencePoolBackend, C: CheckpointStrategy> InferencePoolBackend
    for Autodiff<B, C>
{
    fn max_pool2d_inference(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        output: [usize; 2],
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::max_pool2d_inference(
            <Self as AutodiffBackend>::inner(x),
            kernel,
            stride,
            padding,
            output,
        ))
    }
}

/// `max_pool2d(x)` (dilation 1, no gradient) through [`InferencePoolBackend`]; callers check
/// [`super::has_cpu_kernels`], an `f32` input and a plain (non-autodiff) device first.
pub fn max_pool2d_inference(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    output: [usize; 2],
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as InferencePoolBackend>::max_pool2d_inference(
        x.into_dispatch(),
        kernel,
        stride,
        padding,
        output,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel against the definition (first maximum, NaN winning) over strides, padding,
    /// `ceil_mode` outputs whose last window hangs past the input, rows longer than a block,
    /// NaN and −∞ inputs; every build against the reference, bit for bit.
    #[test]
    fn matches_the_definition_in_every_build() {
        // N, C, H, W, k, s, p, OH, OW
        let cases = [
            [1, 2, 9, 9, 3, 2, 1, 5, 5],
            [2, 3, 40, 37, 3, 2, 1, 20, 19],
            [1, 2, 8, 8, 2, 2, 0, 4, 4],
            [1, 1, 8, 8, 3, 2, 0, 4, 4], // ceil_mode: the last window hangs past the input
            [1, 2, 5, 21, 3, 1, 1, 5, 21],
        ];
        for [n, c, h, w, k, s, p, oh, ow] in cases {
            let g = DepthwiseGeometry {
                batch: n,
                channels: c,
                input: [h, w],
                output: [oh, ow],
                kernel: [k, k],
                stride: [s, s],
                padding: [p, p],
            };
            let mut x: Vec<f32> = (0..n * c * h * w)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761) % 23) as f32 - 11.0)
                .collect();
            x[5] = f32::NAN;
            x[17] = f32::NEG_INFINITY;
            let want: Vec<f32> = (0..n * c * oh * ow)
                .map(|i| {
                    let (pl, r, col) = (i / (oh * ow), i / ow % oh, i % ow);
                    let mut acc = f32::NEG_INFINITY;
                    for t in 0..k * k {
                        let ih = (r * s + t / k).checked_sub(p).filter(|&v| v < h);
                        let iw = (col * s + t % k).checked_sub(p).filter(|&v| v < w);
                        if let (Some(ih), Some(iw)) = (ih, iw) {
                            acc = step(acc, x[(pl * h + ih) * w + iw]);
                        }
                    }
                    acc
                })
                .collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let mut got = vec![0.0; want.len()];
            forward(&g, &x, &mut got);
            assert_eq!(bits(&got), bits(&want), "{g:?}");
            assert!(got.iter().any(|v| v.is_nan()), "the NaN reaches an output");
            let layout = Padded::new(&g);
            let taps = Taps::new(&g, &layout);
            let mut buf = vec![0.0; layout.len(&g)];
            pad_plane(&g, &layout, &x[..h * w], f32::NEG_INFINITY, &mut buf);
            let mut reference = vec![0.0; oh * ow];
            plane_portable(&taps, &buf, &mut reference);
            for isa in Isa::available() {
                let mut built = vec![0.0; oh * ow];
                plane_at(isa, &taps, &buf, &mut built);
                assert_eq!(bits(&built), bits(&reference), "{isa:?} {g:?}");
            }
        }
    }
}
