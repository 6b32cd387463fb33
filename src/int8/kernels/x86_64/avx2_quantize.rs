//! The AVX2 quint8 quantize, [`quantize_val`](crate::int8::tensor::quantize_val) lane for lane:
//! the same f32 multiply by the reciprocal, `vroundps` to nearest-even (what
//! `round_half_even` computes), the integral zero-point added in f32, then the clamp to
//! `[0, 255]`. `vmaxps` returns its second operand when the first is NaN, so NaN becomes 0 as
//! in the scalar path. The last `len mod 32` values take the scalar path.

use std::arch::x86_64::*;

/// Quantizes `x` into `out` (equally long) with `inv_scale = 1.0f / scale`.
#[target_feature(enable = "avx2")]
pub fn quantize(x: &[f32], inv_scale: f32, zero_point: i32, out: &mut [u8]) {
    let n = out.len().min(x.len());
    let q = Lanes {
        inv: _mm256_set1_ps(inv_scale),
        zp: _mm256_set1_ps(zero_point as f32),
        top: _mm256_set1_ps(255.0),
    };
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let blocks = n / 32;
    for (src, dst) in x.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        let [a, b, c, d] = [0, 8, 16, 24].map(|i| q.lane(&src[i..][..8]));
        let bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        let bytes = _mm256_permutevar8x32_epi32(bytes, order);
        // SAFETY: `dst` is 32 long.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, bytes) };
    }
    super::super::quantize::reference(
        &x[blocks * 32..n],
        inv_scale,
        zero_point,
        &mut out[blocks * 32..n],
    );
}

/// The quantization's constants as lanes.
#[derive(Clone, Copy)]
struct Lanes {
    inv: __m256,
    zp: __m256,
    top: __m256,
}

impl Lanes {
    /// 8 values quantized, as i32 lanes in `[0, 255]`. A method, not a closure: LLVM left the
    /// closure outlined, a call per 8 values (half the quantize's time).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lane(self, v: &[f32]) -> __m256i {
        assert!(v.len() >= 8);
        // SAFETY: `v` holds 8 values (asserted).
        let v = unsafe { _mm256_loadu_ps(v.as_ptr()) };
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, self.inv),
        );
        let clamped = _mm256_min_ps(
            _mm256_max_ps(_mm256_add_ps(r, self.zp), _mm256_setzero_ps()),
            self.top,
        );
        _mm256_cvtps_epi32(clamped)
    }
}
