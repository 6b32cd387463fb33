//! The AVX2 quantized multiply, lane for lane as [`MulParams::apply`]: 32 bytes a step, each
//! group of 8 widened to i32, `(q_a − z_a)(q_b − z_b)` exact in `vpmulld`, scaled in f32,
//! clamped to ±[`MUL_SATURATION`] and rounded ties-to-even by `vcvtps2dq`. The last `len mod 32`
//! elements take the scalar path.

use std::arch::x86_64::*;

use crate::int8::kernels::bytewise::reference_mul;
use crate::int8::mul::{MUL_SATURATION, MulParams};

/// Multiplies `a` and `b` into `out` (equally long).
#[target_feature(enable = "avx2")]
pub fn mul(p: &MulParams, a: &[u8], b: &[u8], out: &mut [u8]) {
    let n = out.len().min(a.len()).min(b.len());
    let steps = n / 32;
    let (za, zb) = (
        _mm256_set1_epi32(p.a_zero_point),
        _mm256_set1_epi32(p.b_zero_point),
    );
    let m = _mm256_set1_ps(p.multiplier);
    let (lo_f, hi_f) = (
        _mm256_set1_ps(-MUL_SATURATION),
        _mm256_set1_ps(MUL_SATURATION),
    );
    let zp = _mm256_set1_epi32(p.zero_point);
    let lo = _mm256_set1_epi8(p.lo as i8);
    // Eight quint8 at `s[i..]`, widened to i32.
    let lane = |s: &[u8], i: usize| -> __m256i {
        let bytes = &s[i..][..8];
        // SAFETY: `bytes` is 8 long.
        _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(bytes.as_ptr() as *const __m128i) })
    };
    let group = |i: usize| -> __m256i {
        let prod = _mm256_mullo_epi32(
            _mm256_sub_epi32(lane(a, i), za),
            _mm256_sub_epi32(lane(b, i), zb),
        );
        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(prod), m);
        let t = _mm256_min_ps(_mm256_max_ps(t, lo_f), hi_f);
        _mm256_add_epi32(_mm256_cvtps_epi32(t), zp)
    };
    for s in 0..steps {
        let i = s * 32;
        let (g0, g1, g2, g3) = (group(i), group(i + 8), group(i + 16), group(i + 24));
        // Saturating packs leave the dwords ordered g0 g1 g2 g3 per 128-bit lane, low halves in
        // the low lane: reorder them to g0 g1 g2 g3 across the register.
        let packed = _mm256_packus_epi16(_mm256_packs_epi32(g0, g1), _mm256_packs_epi32(g2, g3));
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let y = _mm256_max_epu8(ordered, lo);
        let dst = &mut out[i..][..32];
        // SAFETY: `dst` is 32 long.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, y) };
    }
    let tail = steps * 32;
    reference_mul(p, &a[tail..n], &b[tail..n], &mut out[tail..n]);
}
