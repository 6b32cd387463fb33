//! The AVX-512 (F + BW) average pooling of
//! [`ByteKernels`](crate::int8::kernels::bytewise::ByteKernels): per output pixel, 64 channels
//! at a time (channels are contiguous in the channels-last input), each tap's 64 bytes widened
//! to four int32 accumulators; then [`AvgPoolCall::finish`] 16 lanes at a time. The last
//! channels run under byte masks (a masked load, a masked narrowing store), not a scalar loop.

use std::arch::x86_64::*;

use crate::int8::avg_pool::AvgPoolCall;
use crate::int8::kernels::bytewise::avg_pool_pixel;

/// The first `len` (≤ 64) lanes.
#[inline(always)]
fn mask(len: usize) -> u64 {
    if len >= 64 { !0 } else { (1u64 << len) - 1 }
}

/// Average pooling of the output pixels from `first` on into `out` (channels-last).
#[target_feature(enable = "avx512f,avx512bw")]
pub fn avg_pool(call: &AvgPoolCall, input: &[u8], first: usize, out: &mut [u8]) {
    let (c, [h, w]) = (call.channels, call.hw);
    let zero_point = _mm512_set1_epi32(call.zero_point);
    let zero_point_f = _mm512_set1_ps(call.zero_point as f32);
    let (lo, hi) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
    for (i, dst) in out.chunks_exact_mut(c).enumerate() {
        let (image, rows, cols, at) = avg_pool_pixel(call, first + i);
        let bias = _mm512_set1_epi32(call.bias[at]);
        let multiplier = _mm512_set1_ps(call.multiplier[at]);
        for c0 in (0..c).step_by(64) {
            let len = (c - c0).min(64);
            let blocks = len.div_ceil(16);
            let mut acc = [bias; 4];
            for y in rows.clone() {
                for x in cols.clone() {
                    let src = &input[((image * h + y) * w + x) * c + c0..][..len];
                    // SAFETY: the mask covers `len` bytes, all inside `src`.
                    let v =
                        unsafe { _mm512_maskz_loadu_epi8(mask(len), src.as_ptr() as *const i8) };
                    let lanes = [
                        _mm512_castsi512_si128(v),
                        _mm512_extracti32x4_epi32::<1>(v),
                        _mm512_extracti32x4_epi32::<2>(v),
                        _mm512_extracti32x4_epi32::<3>(v),
                    ];
                    for (a, &l) in acc.iter_mut().zip(&lanes).take(blocks) {
                        *a = _mm512_add_epi32(*a, _mm512_cvtepu8_epi32(l));
                    }
                }
            }
            for (b, &a) in acc.iter().enumerate().take(blocks) {
                let x = _mm512_mul_ps(_mm512_cvtepi32_ps(a), multiplier);
                let r = match call.zero_point_first {
                    true => _mm512_cvtps_epi32(_mm512_add_ps(x, zero_point_f)),
                    false => _mm512_add_epi32(_mm512_cvtps_epi32(x), zero_point),
                };
                let r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
                let d = &mut dst[c0 + b * 16..][..(len - b * 16).min(16)];
                // SAFETY: the mask covers `d.len()` bytes, all inside `d`.
                unsafe {
                    _mm512_mask_cvtepi32_storeu_epi8(
                        d.as_mut_ptr() as *mut i8,
                        mask(d.len()) as u16,
                        r,
                    )
                };
            }
        }
    }
}
