//! The AVX2 average pooling of [`ByteKernels`](crate::int8::kernels::bytewise::ByteKernels):
//! per output pixel, up to 32 channels at a time (channels are contiguous in the channels-last
//! input) in four int32 accumulators of 8, each tap's bytes widened with `vpmovzxbd`; then
//! [`AvgPoolCall::finish`] 8 lanes at a time. The last `c mod 8` channels run the scalar
//! formula (AVX2 has no byte masks).

use std::arch::x86_64::*;

use crate::int8::avg_pool::AvgPoolCall;
use crate::int8::kernels::bytewise::avg_pool_pixel;

/// 8 bytes at `s[i..]`, zero-extended to int32.
#[inline(always)]
fn widen8(s: &[u8], i: usize) -> __m256i {
    let s = &s[i..][..8];
    // SAFETY: `s` is 8 long; AVX2 is enabled by the callers.
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(s.as_ptr() as *const __m128i)) }
}

/// Average pooling of the output pixels from `first` on into `out` (channels-last).
#[target_feature(enable = "avx2")]
pub fn avg_pool(call: &AvgPoolCall, input: &[u8], first: usize, out: &mut [u8]) {
    let (c, [h, w]) = (call.channels, call.hw);
    let zero_point = _mm256_set1_epi32(call.zero_point);
    let zero_point_f = _mm256_set1_ps(call.zero_point as f32);
    let (lo, hi) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
    let vectors = c / 8 * 8;
    for (i, dst) in out.chunks_exact_mut(c).enumerate() {
        let (image, rows, cols, at) = avg_pool_pixel(call, first + i);
        let pixel = |y: usize, x: usize| ((image * h + y) * w + x) * c;
        let bias = _mm256_set1_epi32(call.bias[at]);
        let multiplier = _mm256_set1_ps(call.multiplier[at]);
        for c0 in (0..vectors).step_by(32) {
            let groups = ((vectors - c0) / 8).min(4);
            let mut acc = [bias; 4];
            for y in rows.clone() {
                for x in cols.clone() {
                    let base = pixel(y, x) + c0;
                    for (g, a) in acc.iter_mut().enumerate().take(groups) {
                        *a = _mm256_add_epi32(*a, widen8(input, base + g * 8));
                    }
                }
            }
            for (g, &a) in acc.iter().enumerate().take(groups) {
                let x = _mm256_mul_ps(_mm256_cvtepi32_ps(a), multiplier);
                let r = match call.zero_point_first {
                    true => _mm256_cvtps_epi32(_mm256_add_ps(x, zero_point_f)),
                    false => _mm256_add_epi32(_mm256_cvtps_epi32(x), zero_point),
                };
                let r = _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);
                // Narrow 8 int32 in [0, 255] to bytes: pack within lanes, gather the two
                // lanes' low quadwords, pack again.
                let r16 = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi32(r, r));
                let r16 = _mm256_castsi256_si128(r16);
                let bytes = _mm_packus_epi16(r16, r16);
                let d = &mut dst[c0 + g * 8..][..8];
                // SAFETY: `d` is 8 long.
                unsafe { _mm_storel_epi64(d.as_mut_ptr() as *mut __m128i, bytes) };
            }
        }
        for (ch, d) in dst.iter_mut().enumerate().skip(vectors) {
            let mut acc = call.bias[at];
            for y in rows.clone() {
                for x in cols.clone() {
                    acc += input[pixel(y, x) + ch] as i32;
                }
            }
            *d = call.finish(acc, call.multiplier[at]);
        }
    }
}
