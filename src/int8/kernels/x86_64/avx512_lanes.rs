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

/// The output stage shared by every lane, as i16 lanes.
#[derive(Clone, Copy)]
pub(super) struct LaneOut {
    zero_point: __m256i,
    lo: __m256i,
    hi: __m256i,
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn lane_out(rq: &Requant) -> LaneOut {
    let (zp, lo, hi) = rq.output_range();
    LaneOut {
        zero_point: _mm256_set1_epi16(zp as i16),
        lo: _mm256_set1_epi16(lo as i16),
        hi: _mm256_set1_epi16(hi as i16),
    }
}

/// [`Requant::apply`] on 16 raw accumulators: `vcvtps2dq` (ties to even, out of range to
/// `i32::MIN` as the scalar `cvtps_epi32`), saturation to i16, the zero-point added with i16
/// saturation, then the clamp to `[lo, hi]` (`0 ≤ lo`, `hi ≤ 255`, so this is also the u8
/// saturation): the scalar `saturate_to_u8` step by step.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn requant16(acc: __m512i, r: &LaneRq, o: LaneOut) -> __m128i {
    let f = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, r.bias_i32));
    let scaled = _mm512_mul_ps(_mm512_add_ps(f, r.bias_f32), r.multiplier);
    let r16 = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(scaled));
    let y = _mm256_adds_epi16(r16, o.zero_point);
    _mm256_cvtepi16_epi8(_mm256_min_epi16(_mm256_max_epi16(y, o.lo), o.hi))
}

/// The byte mask of the first `count` of 16 lanes (`count` ≤ 16).
pub(super) fn lane_mask(count: usize) -> u16 {
    if count >= LANES {
        u16::MAX
    } else {
        (1u16 << count) - 1
    }
}
