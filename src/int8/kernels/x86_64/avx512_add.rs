//! The AVX-512 quantized add, lane for lane as [`AddParams::apply`] and the AVX2 kernel
//! ([`super::avx2_add`]), 16 elements a step: qnnpack's wrapping fixed point with its
//! round-half-away shift, x86's `fma` dequantize and `vcvtps2dq` ties-to-even rounding, then
//! saturated to quint8 by `vpmovusdb`. The last `len mod 16` elements take the scalar path.

use std::arch::x86_64::*;

use crate::int8::add::AddParams;

/// Adds `a` and `b` into `out` (equally long).
#[target_feature(enable = "avx512f,avx512bw,fma")]
pub fn add(p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]) {
    let n = out.len().min(a.len()).min(b.len());
    let steps = n / 16;
    // Sixteen quint8 at `s[16i..]`, widened to i32.
    let lane = |s: &[u8], i: usize| -> __m512i {
        let bytes = &s[i * 16..][..16];
        // SAFETY: `bytes` is 16 long.
        _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(bytes.as_ptr() as *const __m128i) })
    };
    // v holds 16 values in 0..=255: narrow to bytes in order.
    let store = |out: &mut [u8], i: usize, v: __m512i| {
        let dst = &mut out[i * 16..][..16];
        // SAFETY: `dst` is 16 long.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, _mm512_cvtusepi32_epi8(v)) };
    };
    match *p {
        AddParams::Qnnpack {
            zero_point_product,
            a_multiplier,
            b_multiplier,
            shift,
            zero_point,
            lo,
        } => {
            let zpp = _mm512_set1_epi32(zero_point_product);
            let (ma, mb) = (
                _mm512_set1_epi32(a_multiplier as i32),
                _mm512_set1_epi32(b_multiplier as i32),
            );
            let mask = _mm512_set1_epi32(((1u32 << shift) - 1) as i32);
            let threshold = _mm512_srli_epi32::<1>(mask);
            let count = _mm_cvtsi32_si128(shift as i32);
            let (zp, lo, hi) = (
                _mm512_set1_epi32(zero_point),
                _mm512_set1_epi32(lo as i32),
                _mm512_set1_epi32(255),
            );
            let one = _mm512_set1_epi32(1);
            for i in 0..steps {
                let acc = _mm512_add_epi32(
                    _mm512_add_epi32(zpp, _mm512_mullo_epi32(lane(a, i), ma)),
                    _mm512_mullo_epi32(lane(b, i), mb),
                );
                // rem = (acc & mask) − (acc < 0); r = (acc >> shift) + (rem > threshold)
                let rem =
                    _mm512_add_epi32(_mm512_and_si512(acc, mask), _mm512_srai_epi32::<31>(acc));
                let shifted = _mm512_sra_epi32(acc, count);
                let up = _mm512_cmpgt_epi32_mask(rem, threshold);
                let r = _mm512_mask_add_epi32(shifted, up, shifted, one);
                let r = _mm512_min_epi32(r, _mm512_set1_epi32(i16::MAX as i32));
                let y = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(r, zp), lo), hi);
                store(out, i, y);
            }
        }
        AddParams::X86 {
            a: (sa, sa_zp),
            b: (sb, sb_zp),
            inv_scale,
            zero_point,
            relu,
        } => {
            let (sa, sa_zp, sb, sb_zp) = (
                _mm512_set1_ps(sa),
                _mm512_set1_ps(sa_zp),
                _mm512_set1_ps(sb),
                _mm512_set1_ps(sb_zp),
            );
            let inv = _mm512_set1_ps(inv_scale);
            let floor = _mm512_set1_ps(if relu { 0.0 } else { f32::NEG_INFINITY });
            // Beyond ±512 every value saturates to 0 or 255 either way; clamping first keeps
            // the conversion in range (the scalar path rounds in i64).
            let (min, max) = (_mm512_set1_ps(-512.0), _mm512_set1_ps(512.0));
            let zp = _mm512_set1_epi32(zero_point);
            let zero = _mm512_setzero_si512();
            for i in 0..steps {
                let da = _mm512_fmadd_ps(sa, _mm512_cvtepi32_ps(lane(a, i)), sa_zp);
                let db = _mm512_fmadd_ps(sb, _mm512_cvtepi32_ps(lane(b, i)), sb_zp);
                let c = _mm512_max_ps(_mm512_add_ps(da, db), floor);
                let t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(c, inv), min), max);
                let y = _mm512_add_epi32(_mm512_cvtps_epi32(t), zp);
                // Below 0 → 0; above 255 saturates in the narrowing store.
                store(out, i, _mm512_max_epi32(y, zero));
            }
        }
    }
    for i in steps * 16..n {
        out[i] = p.apply(a[i], b[i]);
    }
}
