//! The AVX2 (+FMA) quantized add, both engines' arithmetic lane for lane as
//! [`AddParams::apply`]: qnnpack's wrapping fixed point with its round-half-away shift, x86's
//! `fma` dequantize, `vcvtps2dq` ties-to-even rounding. The last `len mod 8` elements take the
//! scalar path.

use std::arch::x86_64::*;

use crate::int8::add::AddParams;

/// Adds `a` and `b` into `out` (equally long).
#[target_feature(enable = "avx2,fma")]
pub fn add(p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]) {
    let n = out.len().min(a.len()).min(b.len());
    let vectors = n / 8;
    let lane = |s: &[u8], i: usize| -> __m256i {
        let bytes = &s[i * 8..][..8];
        // SAFETY: `bytes` is 8 long.
        _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(bytes.as_ptr() as *const __m128i) })
    };
    let store = |out: &mut [u8], i: usize, v: __m256i| {
        // v holds 8 values in 0..=255: narrow to bytes in order.
        let packed = _mm256_packus_epi16(_mm256_packs_epi32(v, v), _mm256_setzero_si256());
        let bytes = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
        let dst = &mut out[i * 8..][..8];
        // SAFETY: `dst` is 8 long.
        unsafe {
            _mm_storel_epi64(
                dst.as_mut_ptr() as *mut __m128i,
                _mm256_castsi256_si128(bytes),
            )
        };
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
            let zpp = _mm256_set1_epi32(zero_point_product);
            let (ma, mb) = (
                _mm256_set1_epi32(a_multiplier as i32),
                _mm256_set1_epi32(b_multiplier as i32),
            );
            let mask = _mm256_set1_epi32(((1u32 << shift) - 1) as i32);
            let threshold = _mm256_srli_epi32::<1>(mask);
            let count = _mm_cvtsi32_si128(shift as i32);
            let (zp, lo, hi) = (
                _mm256_set1_epi32(zero_point),
                _mm256_set1_epi32(lo as i32),
                _mm256_set1_epi32(255),
            );
            for i in 0..vectors {
                let acc = _mm256_add_epi32(
                    _mm256_add_epi32(zpp, _mm256_mullo_epi32(lane(a, i), ma)),
                    _mm256_mullo_epi32(lane(b, i), mb),
                );
                // rem = (acc & mask) − (acc < 0); r = (acc >> shift) + (rem > threshold)
                let rem =
                    _mm256_add_epi32(_mm256_and_si256(acc, mask), _mm256_srai_epi32::<31>(acc));
                let r = _mm256_sub_epi32(
                    _mm256_sra_epi32(acc, count),
                    _mm256_cmpgt_epi32(rem, threshold),
                );
                let r = _mm256_min_epi32(r, _mm256_set1_epi32(i16::MAX as i32));
                let y = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(r, zp), lo), hi);
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
                _mm256_set1_ps(sa),
                _mm256_set1_ps(sa_zp),
                _mm256_set1_ps(sb),
                _mm256_set1_ps(sb_zp),
            );
            let inv = _mm256_set1_ps(inv_scale);
            let floor = _mm256_set1_ps(if relu { 0.0 } else { f32::NEG_INFINITY });
            // Beyond ±512 every value saturates to 0 or 255 either way; clamping first keeps
            // the conversion in range (the scalar path rounds in i64).
            let (min, max) = (_mm256_set1_ps(-512.0), _mm256_set1_ps(512.0));
            let zp = _mm256_set1_epi32(zero_point);
            let (lo, hi) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
            for i in 0..vectors {
                let da = _mm256_fmadd_ps(sa, _mm256_cvtepi32_ps(lane(a, i)), sa_zp);
                let db = _mm256_fmadd_ps(sb, _mm256_cvtepi32_ps(lane(b, i)), sb_zp);
                let c = _mm256_max_ps(_mm256_add_ps(da, db), floor);
                let t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(c, inv), min), max);
                let y = _mm256_add_epi32(_mm256_cvtps_epi32(t), zp);
                store(out, i, _mm256_min_epi32(_mm256_max_epi32(y, lo), hi));
            }
        }
    }
    for i in vectors * 8..n {
        out[i] = p.apply(a[i], b[i]);
    }
}
