//! The AVX2 byte kernels of [`ByteKernels`](crate::int8::kernels::bytewise::ByteKernels).
//!
//! Max pooling is separable (the maximum over a window is the maximum over its rows of the
//! maximum over its columns): per output row, `vpmaxub` folds the window's input rows into one
//! row, which is padded (with 0, the least quint8, where outside positions are skipped; with
//! the edge values where they are clamped), and the window's columns are folded along it,
//! 32 outputs at a time for strides 1 and 2.
//!
//! The lookup splits each half of the table into 8 rows of 16 (`vpshufb` looks up 16 bytes)
//! and XORs their differences: row `k` holds `T_k ⊕ T_{k−1}`, looked up at `x − 16k`, which has
//! its top bit set (so `vpshufb` gives 0) once `k` passes the row of `x`; the XOR of what
//! remains telescopes to `T_{x/16}[x mod 16]`. Bytes from 128 run the same on `x − 128`
//! against the upper half, and each byte's top bit picks its half.

use std::arch::x86_64::*;

use crate::int8::kernels::bytewise::{MaxPoolCall, max_pool_separable, reference_lookup};

/// Loads 32 bytes at `s[i..]`.
#[inline(always)]
fn load(s: &[u8], i: usize) -> __m256i {
    let s = &s[i..][..32];
    // SAFETY: `s` is 32 long.
    unsafe { _mm256_loadu_si256(s.as_ptr() as *const __m256i) }
}

/// Stores 32 bytes at `d[i..]`.
#[inline(always)]
fn store(d: &mut [u8], i: usize, v: __m256i) {
    let d = &mut d[i..][..32];
    // SAFETY: `d` is 32 long.
    unsafe { _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, v) }
}

/// Max pooling of the planes of `input` into `out` (the shared separable driver; the slack
/// lets the stride-2 path read a vector pair past the last used column).
#[target_feature(enable = "avx2")]
pub fn max_pool(call: &MaxPoolCall, input: &[u8], out: &mut [u8]) {
    // The closures inherit this function's target features.
    max_pool_separable(
        call,
        input,
        out,
        64,
        |plane, w, rows, dst| fold_rows(plane, w, rows, dst),
        |row, taps, dilation, stride, dst| fold_columns(row, taps, dilation, stride, dst),
    );
}

/// `dst[x] = max over r in rows of plane[r·w + x]` (0 for no rows).
#[target_feature(enable = "avx2")]
fn fold_rows(plane: &[u8], w: usize, rows: &[usize], dst: &mut [u8]) {
    let vectors = w / 32;
    for v in 0..vectors {
        let mut m = _mm256_setzero_si256();
        for &r in rows {
            m = _mm256_max_epu8(m, load(plane, r * w + v * 32));
        }
        store(dst, v * 32, m);
    }
    for (x, d) in dst.iter_mut().enumerate().skip(vectors * 32) {
        *d = rows.iter().map(|&r| plane[r * w + x]).max().unwrap_or(0);
    }
}

/// `dst[o] = max over k < taps of row[o·stride + k·dilation]`.
#[target_feature(enable = "avx2")]
fn fold_columns(row: &[u8], taps: usize, dilation: usize, stride: usize, dst: &mut [u8]) {
    let vectors = match stride {
        1 | 2 => dst.len() / 32,
        _ => 0,
    };
    let even = _mm256_set1_epi16(0x00ff);
    for v in 0..vectors {
        let o = v * 32;
        let mut m = _mm256_setzero_si256();
        for k in 0..taps {
            let at = o * stride + k * dilation;
            let v = match stride {
                1 => load(row, at),
                // The even bytes of 64: the low byte of each 16-bit lane, packed, then the
                // two 128-bit lanes of each half put back in order.
                _ => {
                    let a = _mm256_and_si256(load(row, at), even);
                    let b = _mm256_and_si256(load(row, at + 32), even);
                    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(a, b))
                }
            };
            m = _mm256_max_epu8(m, v);
        }
        store(dst, o, m);
    }
    for (o, d) in dst.iter_mut().enumerate().skip(vectors * 32) {
        *d = (0..taps)
            .map(|k| row[o * stride + k * dilation])
            .max()
            .unwrap_or(0);
    }
}

/// `out[i] = table[input[i]]`.
#[target_feature(enable = "avx2")]
pub fn lookup(table: &[u8; 256], input: &[u8], out: &mut [u8]) {
    let n = out.len().min(input.len());
    // rows[k] = T_k ⊕ T_{k−1} within each half (T_{−1} = 0), in both 128-bit lanes.
    let rows: [__m256i; 16] = std::array::from_fn(|k| {
        let mut r = [0u8; 16];
        for (j, b) in r.iter_mut().enumerate() {
            let prev = if k % 8 == 0 {
                0
            } else {
                table[(k - 1) * 16 + j]
            };
            *b = table[k * 16 + j] ^ prev;
        }
        // SAFETY: `r` is 16 long.
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(r.as_ptr() as *const __m128i) })
    });
    let (sixteen, top) = (_mm256_set1_epi8(16), _mm256_set1_epi8(-128));
    let vectors = n / 32;
    for v in 0..vectors {
        let x = load(input, v * 32);
        let half = |rows: &[__m256i], mut idx: __m256i| {
            let mut acc = _mm256_setzero_si256();
            for &r in rows {
                acc = _mm256_xor_si256(acc, _mm256_shuffle_epi8(r, idx));
                idx = _mm256_sub_epi8(idx, sixteen);
            }
            acc
        };
        let lo = half(&rows[..8], x);
        let hi = half(&rows[8..], _mm256_xor_si256(x, top));
        // Each byte's top bit picks its half.
        store(out, v * 32, _mm256_blendv_epi8(lo, hi, x));
    }
    reference_lookup(table, &input[vectors * 32..n], &mut out[vectors * 32..n]);
}
