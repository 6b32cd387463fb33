//! AVX-512 depthwise 3×3 convolution on channels-last tensors, 16 channels per vector.
//!
//! In NHWC the 16 channels of a pixel are 16 contiguous bytes, so the kernel reads its input
//! and writes its output in place, with no per-channel planes to pad or transpose. It runs
//! a row segment of output pixels one group of 16 channels at a time (the group's weights and
//! requantization stay in registers); a pixel's nine taps are addresses — out-of-image taps
//! point at a row of input zero-points, so padding costs nothing and `z_in · Σ w` comes off
//! the bias ([`super::avx512_lanes`]). Taps are paired
//! byte by byte (`(x[t], x[t + 1])` per lane, widened to i16) and one `vpdpwssd` multiplies a
//! pair by the lane's weight pair; the ninth tap pairs with a zero weight. Sums are exact:
//! `q ≤ 255` and `|w| ≤ 255`. The 16 results are requantized per lane ([`requant16`]) and
//! stored as 16 bytes of the output pixel. A partial last group loads and stores under a mask.

use std::arch::x86_64::*;

use super::super::{ConvCall, for_each_block, threads_for};
use super::avx512_lanes::{LANES, lane_groups, lane_mask, lane_out, requant16};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Taps of the kernel.
const TAPS: usize = 9;
/// `vpdpwssd` weight pairs per group: four tap pairs and the ninth tap with a zero.
const PAIRS: usize = TAPS.div_ceil(2);

/// Whether this kernel runs `op`: a 3×3 depthwise convolution (`groups = in = out`), any
/// stride and padding.
pub(super) fn takes(op: &Int8Conv2d) -> bool {
    let spec = op.spec();
    spec.groups == op.in_channels()
        && op.out_channels() == op.in_channels()
        && op.kernel_size() == [3, 3]
}

/// The convolution of the channels-last `input` into the channels-last `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn conv_depthwise(op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    let Some(call) = ConvCall::of(op, input) else {
        return;
    };
    let ConvCall {
        n,
        c,
        h,
        w,
        oh,
        ow,
        stride,
        pad,
        ..
    } = call;
    let weights = op.packed_weight();
    let groups = c.div_ceil(LANES);
    let zp = input.qparams().zero_point;
    let lanes = lane_groups(rq, c, zp, |ch| {
        weights[ch * TAPS..][..TAPS].iter().map(|&v| v as i32).sum()
    });
    let o = lane_out(rq);
    let pair_weights: Vec<[__m512i; PAIRS]> = (0..groups)
        .map(|g| {
            std::array::from_fn(|t| {
                let tap = |ch: usize, k: usize| -> i16 {
                    if ch < c && k < TAPS {
                        weights[ch * TAPS + k]
                    } else {
                        0
                    }
                };
                let v: [i32; LANES] = std::array::from_fn(|j| {
                    let ch = g * LANES + j;
                    (tap(ch, 2 * t) as u16 as u32 | (tap(ch, 2 * t + 1) as u16 as u32) << 16) as i32
                });
                // SAFETY: v is 16 i32.
                unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) }
            })
        })
        .collect();
    // What out-of-image taps read: the zero-point in every channel of every group.
    let zero_row = vec![zp as u8; groups * LANES];
    let x = input.data();
    // Output pixels are contiguous `c`-byte runs, dealt to the threads in equal ranges; a
    // thread runs its range row segment by row segment, group by group, so that a group's
    // weights and requantization stay in registers along the row.
    let pixels = n * oh * ow;
    let per_task = pixels.div_ceil(threads_for(pixels * c * TAPS)).max(1);
    for_each_block(out, per_task * c, |task, chunk| {
        let first = task * per_task;
        let mut done = 0;
        while done < chunk.len() / c {
            let p = first + done;
            let (b, oy, ox0) = (p / (oh * ow), p / ow % oh, p % ow);
            let count = (ow - ox0).min(chunk.len() / c - done);
            let image = &x[b * h * w * c..][..h * w * c];
            // Each kernel row's input row, or the zero-point row (column step 0) outside.
            let rows: [(*const u8, usize); 3] = std::array::from_fn(|ky| {
                let iy = (oy * stride + ky).wrapping_sub(pad);
                if iy < h {
                    (image[iy * w * c..].as_ptr(), c)
                } else {
                    (zero_row.as_ptr(), 0)
                }
            });
            let segment = &mut chunk[done * c..][..count * c];
            for (g, (pw, lane_rq)) in pair_weights.iter().zip(&lanes).enumerate() {
                let mask = lane_mask(c - g * LANES);
                let zero = zero_row.as_ptr().wrapping_add(g * LANES);
                let base = rows.map(|(row, step)| (row.wrapping_add(g * LANES), step));
                for (i, pixel) in segment.chunks_exact_mut(c).enumerate() {
                    let ix0 = ((ox0 + i) * stride).wrapping_sub(pad);
                    // Inside the image, tap (ky, kx) is its row's pixel ix0 + kx; the edge
                    // columns check each tap.
                    let interior = ix0 < w && ix0 + 2 < w;
                    let tap: [*const u8; TAPS] = std::array::from_fn(|t| {
                        let (row, step) = base[t / 3];
                        let ix = ix0.wrapping_add(t % 3);
                        if interior || ix < w {
                            row.wrapping_add(ix.wrapping_mul(step))
                        } else {
                            zero
                        }
                    });
                    // SAFETY: a tap address starts the group's channels of a pixel inside
                    // `image`, or of `zero_row` (`groups · 16` bytes); the mask reads only
                    // channels < c.
                    let load =
                        |t: usize| unsafe { _mm_maskz_loadu_epi8(mask, tap[t] as *const i8) };
                    let mut acc = _mm512_setzero_si512();
                    for (t, &wv) in pw.iter().enumerate().take(PAIRS - 1) {
                        let (a, b) = (load(2 * t), load(2 * t + 1));
                        let ab = _mm256_set_m128i(_mm_unpackhi_epi8(a, b), _mm_unpacklo_epi8(a, b));
                        acc = _mm512_dpwssd_epi32(acc, _mm512_cvtepu8_epi16(ab), wv);
                    }
                    let last = _mm512_cvtepu8_epi32(load(TAPS - 1));
                    acc = _mm512_dpwssd_epi32(acc, last, pw[PAIRS - 1]);
                    let v = requant16(acc, lane_rq, o);
                    // SAFETY: the mask stores only channels < c of this output pixel.
                    unsafe {
                        _mm_mask_storeu_epi8(pixel[g * LANES..].as_mut_ptr() as *mut i8, mask, v)
                    };
                }
            }
            done += count;
        }
    });
}
