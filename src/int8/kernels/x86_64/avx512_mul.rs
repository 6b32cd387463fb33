//! The AVX-512 quantized multiply, lane for lane as [`MulParams::apply`] and the AVX2 kernel:
//! 64 bytes a step, each group of 16 widened to i32, `(q_a − z_a)(q_b − z_b)` exact in
//! `vpmulld`, scaled in f32, clamped to ±[`MUL_SATURATION`], rounded ties-to-even by
//! `vcvtps2dq`, then saturated to quint8 by `vpmovusdb`. The last `len mod 64` elements take
//! the scalar path.

use std::arch::x86_64::*;

use crate::int8::kernels::bytewise::reference_mul;
use crate::int8::mul::{MUL_SATURATION, MulParams};

/// Multiplies `a` and `b` into `out` (equally long).
#[target_feature(enable = "avx512f,avx512bw")]
pub fn mul(p: &MulParams, a: &[u8], b: &[u8], out: &mut [u8]) {
    let n = out.len().min(a.len()).min(b.len());
    let steps = n / 16;
    let (za, zb) = (
        _mm512_set1_epi32(p.a_zero_point),
        _mm512_set1_epi32(p.b_zero_point),
    );
    let m = _mm512_set1_ps(p.multiplier);
    let (lo_f, hi_f) = (
        _mm512_set1_ps(-MUL_SATURATION),
        _mm512_set1_ps(MUL_SATURATION),
    );
    let zp = _mm512_set1_epi32(p.zero_point);
    let lo = _mm_set1_epi8(p.lo as i8);
    // Sixteen quint8 at `s[i..]`, widened to i32.
    let lane = |s: &[u8], i: usize| -> __m512i {
        let bytes = &s[i..][..16];
        // SAFETY: `bytes` is 16 long.
        _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(bytes.as_ptr() as *const __m128i) })
    };
    for s in 0..steps {
        let i = s * 16;
        let prod = _mm512_mullo_epi32(
            _mm512_sub_epi32(lane(a, i), za),
            _mm512_sub_epi32(lane(b, i), zb),
        );
        let t = _mm512_mul_ps(_mm512_cvtepi32_ps(prod), m);
        let t = _mm512_min_ps(_mm512_max_ps(t, lo_f), hi_f);
        let y = _mm512_add_epi32(_mm512_cvtps_epi32(t), zp);
        // Below 0 → 0, above 255 → 255 (unsigned saturation), then the fused ReLU's floor.
        let y = _mm512_cvtusepi32_epi8(_mm512_max_epi32(y, _mm512_setzero_si512()));
        let y = _mm_max_epu8(y, lo);
        let dst = &mut out[i..][..16];
        // SAFETY: `dst` is 16 long.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, y) };
    }
    let tail = steps * 16;
    reference_mul(p, &a[tail..n], &b[tail..n], &mut out[tail..n]);
}
