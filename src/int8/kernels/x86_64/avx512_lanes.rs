//! The output stage of the channels-last AVX-512 kernels, whose vector lanes are 16 output
//! channels of one pixel: [`Requant::apply`] per lane with each lane's own channel parameters.
//!
//! Those kernels multiply raw `q_in` (not `q_in − z_in`), so that padding taps can hold the
//! input zero-point and no lane needs a subtraction; each channel's int32 bias takes
//! `z_in · Σ_k w[o, k]` off instead, which gives the exact `Σ (q_in − z_in)·w` of the
//! reference (wrapping i32 addition is associative).

use std::arch::x86_64::*;

use crate::int8::requant::Requant;

/// Output channels per vector.
pub(super) const LANES: usize = 16;

/// The requantization of 16 output channels, one per lane.
#[derive(Clone, Copy)]
pub(super) struct LaneRq {
    bias_i32: __m512i,
    bias_f32: __m512,
    multiplier: __m512,
}

/// The output stage shared by every lane: the zero-point as i16 lanes, the clamp as u8 lanes.
#[derive(Clone, Copy)]
pub(super) struct LaneOut {
    zero_point: __m512i,
    lo: __m512i,
    hi: __m512i,
}

impl LaneRq {
    /// The accumulator's starting value: the int32 bias, so that the sums need no add.
    pub(super) fn acc_init(&self) -> __m512i {
        self.bias_i32
    }
}

/// The requantization of every group of 16 channels of a layer with `channels` outputs, for
/// raw inputs with zero-point `zp_in`; `weight_sum(o)` is `Σ_k w[o, k]`. Lanes past the last
/// channel repeat it (their outputs are never stored).
#[target_feature(enable = "avx512f")]
pub(super) fn lane_groups(
    rq: &Requant,
    channels: usize,
    zp_in: i32,
    weight_sum: impl Fn(usize) -> i32,
) -> Vec<LaneRq> {
    let (bi, bf, m) = (rq.bias_i32(), rq.bias_f32(), rq.multipliers());
    (0..channels.div_ceil(LANES))
        .map(|g| {
            let ch = |j: usize| (g * LANES + j).min(channels - 1);
            let i32s: [i32; LANES] = std::array::from_fn(|j| {
                bi[ch(j)].wrapping_sub(zp_in.wrapping_mul(weight_sum(ch(j))))
            });
            let f32s: [f32; LANES] = std::array::from_fn(|j| bf[ch(j)]);
            let mults: [f32; LANES] = std::array::from_fn(|j| m[ch(j)]);
            // SAFETY: each array is 16 lanes of 4 bytes.
            unsafe {
                LaneRq {
                    bias_i32: _mm512_loadu_si512(i32s.as_ptr() as *const __m512i),
                    bias_f32: _mm512_loadu_ps(f32s.as_ptr()),
                    multiplier: _mm512_loadu_ps(mults.as_ptr()),
                }
            }
        })
        .collect()
}

#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn lane_out(rq: &Requant) -> LaneOut {
    let (zp, lo, hi) = rq.output_range();
    LaneOut {
        zero_point: _mm512_set1_epi16(zp as i16),
        lo: _mm512_set1_epi8(lo as i8),
        hi: _mm512_set1_epi8(hi as i8),
    }
}

/// The float stage of [`Requant::apply`] on 16 accumulators that started at
/// [`LaneRq::acc_init`]: `vcvtps2dq` of `((float)acc + bias_f32) · m` (ties to even, out of
/// range to `i32::MIN`, as the scalar `cvtps_epi32`).
#[target_feature(enable = "avx512f")]
fn round16(acc: __m512i, r: &LaneRq) -> __m512i {
    let f = _mm512_add_ps(_mm512_cvtepi32_ps(acc), r.bias_f32);
    _mm512_cvtps_epi32(_mm512_mul_ps(f, r.multiplier))
}

/// [`Requant::apply`] on four vectors of 16 accumulators (each started at its
/// [`LaneRq::acc_init`]), as 64 bytes: `acc[0]`'s 16 outputs, then `acc[1]`'s, `acc[2]`'s,
/// `acc[3]`'s. The output stage is the scalar `saturate_to_u8` step by step, four vectors at
/// once: `packs_epi32` (to i16), `adds_epi16` of the zero-point, `packus_epi16` (to u8), the
/// clamp to `[lo, hi]`; the packs interleave the vectors by 4-lane dwords, which one dword
/// permutation puts back in order.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn requant64(acc: [__m512i; 4], r: [&LaneRq; 4], o: LaneOut) -> __m512i {
    let rounded: [__m512i; 4] = std::array::from_fn(|i| round16(acc[i], r[i]));
    let lo = _mm512_adds_epi16(_mm512_packs_epi32(rounded[0], rounded[1]), o.zero_point);
    let hi = _mm512_adds_epi16(_mm512_packs_epi32(rounded[2], rounded[3]), o.zero_point);
    let bytes = _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(lo, hi), o.lo), o.hi);
    // Dword 4·L + v of `bytes` holds lanes 4L..4L+3 of vector v; out dword 4·v + L takes it.
    let order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    _mm512_permutexvar_epi32(order, bytes)
}

/// The byte mask of the first `count` of 16 lanes (`count` ≤ 16).
pub(super) fn lane_mask(count: usize) -> u16 {
    if count >= LANES {
        u16::MAX
    } else {
        (1u16 << count) - 1
    }
}
