//! AVX-512 depthwise 3×3 convolution with channels in the vector lanes, for small planes.
//!
//! On a 14×14 or 7×7 plane the channel-by-channel kernel ([`super::avx2_depthwise`]) spends
//! most of its time per channel (padding the plane, building its column pairs, a partly
//! filled vector per output row). Here 16 channels go through together: each is written once
//! into a padded, channels-last buffer of i32 lanes holding the column pair
//! `(x[py][px], x[py][px + 1])` of every padded position (input zero-point removed, padding 0),
//! so that one `vpdpwssd` multiplies a pixel's two neighbouring taps of 16 channels by their
//! weight pairs `(w[ky][0], w[ky][1])`, and a second one the third tap `(w[ky][2], 0)`. Every
//! lane is a real output; the 16 outputs of a pixel are requantized per lane with their
//! channels' parameters ([`requant8`], so bit for bit the reference's) and written to their
//! NCHW planes. Sums are exact: `|q − z| ≤ 255` and the weights are i16.

use std::arch::x86_64::*;

use super::super::{ConvCall, for_each_block, threads_for};
use super::avx2::{RowRq, narrow16, out_rq, requant8};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Channels per vector.
const LANES: usize = 16;

/// Whether the channels-last kernel should take this depthwise 3×3 call: planes small enough
/// that the per-channel overhead of the planar kernel dominates, and enough channels to fill
/// the lanes.
pub(super) fn prefers(call: &ConvCall) -> bool {
    call.h * call.w <= 28 * 28 && call.c >= LANES && [call.kh, call.kw] == [3, 3]
}

/// A 3×3 depthwise convolution (`groups = in = out`, stride ≤ 2) over groups of 16 channels.
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
    assert!([call.kh, call.kw] == [3, 3] && stride <= 2);
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let zp = input.qparams().zero_point as i16;
    let o = out_rq(rq);
    let plane = oh * ow;
    let weights = op.packed_weight();
    let groups = c.div_ceil(LANES);
    let per_task = groups.div_ceil(threads_for(c * plane * 9)).max(1);
    let zpv = _mm256_set1_epi16(zp);
    // Lane pairs of two neighbouring positions: lane j = (pos[j], next[j]) from 32 i16.
    let pair_index: [i16; 32] = std::array::from_fn(|l| (l / 2 + (l % 2) * LANES) as i16);
    // SAFETY: 32 i16 are 64 bytes.
    let pair_index = unsafe { _mm512_loadu_si512(pair_index.as_ptr() as *const __m512i) };
    for b in 0..n {
        let image = &input.data()[b * c * h * w..][..c * h * w];
        let dst = &mut out[b * c * plane..][..c * plane];
        for_each_block(dst, per_task * LANES * plane, |task, chunk| {
            // Channels-last padded input (two positions of slack for the last 64-byte load)
            // and channels-last output of one group.
            let mut padded = vec![0i16; (ph * pw + 2) * LANES];
            let mut pixels = vec![0u8; plane * LANES];
            for (i, group_out) in chunk.chunks_mut(LANES * plane).enumerate() {
                let first = (task * per_task + i) * LANES;
                let valid = group_out.len() / plane;
                let group = &image[first * h * w..][..valid * h * w];
                fill_channels_last(group, (h, w), pad, zpv, &mut padded);
                let lanes = |f: &dyn Fn(usize) -> i32| {
                    let v: [i32; LANES] = std::array::from_fn(|j| f(first + j.min(valid - 1)));
                    // SAFETY: v is 16 i32.
                    unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) }
                };
                let pair = |lo: i16, hi: i16| (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32;
                let w01: [__m512i; 3] = std::array::from_fn(|ky| {
                    lanes(&|ch| pair(weights[ch * 9 + ky * 3], weights[ch * 9 + ky * 3 + 1]))
                });
                let w2: [__m512i; 3] =
                    std::array::from_fn(|ky| lanes(&|ch| pair(weights[ch * 9 + ky * 3 + 2], 0)));
                let rows = [0, 8].map(|half| lane_rq(rq, first + half, first + valid - 1));
                let base = padded.as_ptr();
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut two, mut third) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                        for ky in 0..3 {
                            let at = (oy * stride + ky) * pw + ox * stride;
                            // SAFETY: at + 2 < ph · pw (an output's 3×3 window lies inside
                            // the padded plane), and the buffer has two positions of slack
                            // for the 64 bytes (two positions) read from at + 2.
                            let (a, t) = unsafe {
                                (
                                    _mm512_loadu_si512(base.add(at * LANES) as *const __m512i),
                                    _mm512_loadu_si512(base.add((at + 2) * LANES) as *const __m512i),
                                )
                            };
                            let a = _mm512_permutexvar_epi16(pair_index, a);
                            let t = _mm512_permutexvar_epi16(pair_index, t);
                            two = _mm512_dpwssd_epi32(two, a, w01[ky]);
                            third = _mm512_dpwssd_epi32(third, t, w2[ky]);
                        }
                        let acc = _mm512_add_epi32(two, third);
                        let v = narrow16(
                            requant8(_mm512_castsi512_si256(acc), rows[0], o),
                            requant8(_mm512_extracti64x4_epi64::<1>(acc), rows[1], o),
                        );
                        let at = (oy * ow + ox) * LANES;
                        // SAFETY: `pixels` holds plane · 16 bytes.
                        unsafe {
                            _mm_storeu_si128(pixels[at..][..LANES].as_mut_ptr() as *mut __m128i, v)
                        };
                    }
                }
                store_planes(&pixels, plane, group_out);
            }
        });
    }
}

/// Transposes a 16 × 16 byte block: byte `j` of row `i` of the result is byte `i` of row `j`.
/// Four rounds of the same perfect shuffle (rows `i` and `i + 8` interleaved byte by byte)
/// rotate the row and column index bits into each other's place.
#[target_feature(enable = "avx2")]
fn transpose16(rows: [__m128i; 16]) -> [__m128i; 16] {
    let mut r = rows;
    for _ in 0..4 {
        r = std::array::from_fn(|k| {
            let i = k / 2;
            if k % 2 == 0 {
                _mm_unpacklo_epi8(r[i], r[i + 8])
            } else {
                _mm_unpackhi_epi8(r[i], r[i + 8])
            }
        });
    }
    r
}

/// Writes up to 16 NCHW channels (`group`, `[valid, h, w]` quint8) into the interior of the
/// channels-last `padded` (`[ph, pw, 16]` i16, border 0) with `zp` removed, 16 pixels at a
/// time through [`transpose16`]. Lanes of missing channels hold `−zp` (their outputs are
/// dropped).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn fill_channels_last(
    group: &[u8],
    (h, w): (usize, usize),
    pad: usize,
    zp: __m256i,
    padded: &mut [i16],
) {
    let valid = group.len() / (h * w);
    let pw = w + 2 * pad;
    padded.fill(0);
    for y in 0..h {
        for x0 in (0..w).step_by(LANES) {
            let count = LANES.min(w - x0);
            let mask = lane_mask(count);
            let rows: [__m128i; LANES] = std::array::from_fn(|j| {
                if j >= valid {
                    return _mm_setzero_si128();
                }
                let src = &group[j * h * w + y * w + x0..][..count];
                // SAFETY: the mask loads only the `count` bytes of `src`.
                unsafe { _mm_maskz_loadu_epi8(mask, src.as_ptr() as *const i8) }
            });
            let cols = transpose16(rows);
            let row = &mut padded[((y + pad) * pw + x0 + pad) * LANES..][..count * LANES];
            for (cell, &col) in row.chunks_exact_mut(LANES).zip(&cols) {
                let v = _mm256_sub_epi16(_mm256_cvtepu8_epi16(col), zp);
                // SAFETY: a cell is 16 i16 = 32 bytes.
                unsafe { _mm256_storeu_si256(cell.as_mut_ptr() as *mut __m256i, v) };
            }
        }
    }
}

/// The byte mask of the first `count` of 16 lanes (`count` ≤ 16).
fn lane_mask(count: usize) -> u16 {
    if count == LANES {
        u16::MAX
    } else {
        (1u16 << count) - 1
    }
}

/// Writes a group's channels-last output (`pixels`, `[plane, 16]`) to its NCHW planes
/// (`group_out`, `[valid, plane]`), 16 pixels at a time through [`transpose16`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn store_planes(pixels: &[u8], plane: usize, group_out: &mut [u8]) {
    let valid = group_out.len() / plane;
    for p0 in (0..plane).step_by(LANES) {
        let count = LANES.min(plane - p0);
        let mask = lane_mask(count);
        let rows: [__m128i; LANES] = std::array::from_fn(|k| {
            if k >= count {
                return _mm_setzero_si128();
            }
            // SAFETY: pixel p0 + k < plane has 16 bytes in `pixels`.
            unsafe {
                _mm_loadu_si128(pixels[(p0 + k) * LANES..][..LANES].as_ptr() as *const __m128i)
            }
        });
        let cols = transpose16(rows);
        for (j, &col) in cols.iter().enumerate().take(valid) {
            let dst = &mut group_out[j * plane + p0..][..count];
            // SAFETY: the mask stores only the `count` bytes of `dst`.
            unsafe { _mm_mask_storeu_epi8(dst.as_mut_ptr() as *mut i8, mask, col) };
        }
    }
}

/// The requantization of the 8 channels from `first` as lanes (lanes past channel `last`
/// repeat it; their outputs are dropped).
#[target_feature(enable = "avx2")]
fn lane_rq(rq: &Requant, first: usize, last: usize) -> RowRq {
    let ch = |j: usize| (first + j).min(last);
    let (bi, bf, m) = (rq.bias_i32(), rq.bias_f32(), rq.multipliers());
    let i32s: [i32; 8] = std::array::from_fn(|j| bi[ch(j)]);
    let f32s: [f32; 8] = std::array::from_fn(|j| bf[ch(j)]);
    let mults: [f32; 8] = std::array::from_fn(|j| m[ch(j)]);
    // SAFETY: each array is 8 lanes.
    unsafe {
        RowRq {
            bias_i32: _mm256_loadu_si256(i32s.as_ptr() as *const __m256i),
            bias_f32: _mm256_loadu_ps(f32s.as_ptr()),
            multiplier: _mm256_loadu_ps(mults.as_ptr()),
        }
    }
}
