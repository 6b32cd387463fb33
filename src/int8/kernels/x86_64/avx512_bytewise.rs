//! The AVX-512 byte kernels of [`ByteKernels`](crate::int8::kernels::bytewise::ByteKernels)
//! (AVX-512 BW and VBMI): the AVX2 kernels' algorithms 64 bytes at a time.
//!
//! Max pooling is separable as in the AVX2 kernel: `vpmaxub` folds a window's input rows into
//! one padded row, then its columns along that row, 64 outputs at a time for strides 1 and 2.
//!
//! The lookup needs no telescoping here: `vpermi2b` looks a byte up in 128 bytes (two
//! registers) by its low seven bits, so two of them cover the table's halves and each byte's
//! top bit picks its half. Tails run under byte masks, not scalar loops.

use std::arch::x86_64::*;

use crate::int8::kernels::bytewise::{MaxPoolCall, max_pool_separable};

/// Loads 64 bytes at `s[i..]`.
#[inline(always)]
fn load(s: &[u8], i: usize) -> __m512i {
    let s = &s[i..][..64];
    // SAFETY: `s` is 64 long.
    unsafe { _mm512_loadu_si512(s.as_ptr() as *const __m512i) }
}

/// Stores 64 bytes at `d[i..]`.
#[inline(always)]
fn store(d: &mut [u8], i: usize, v: __m512i) {
    let d = &mut d[i..][..64];
    // SAFETY: `d` is 64 long.
    unsafe { _mm512_storeu_si512(d.as_mut_ptr() as *mut __m512i, v) }
}

/// Max pooling of the planes of `input` into `out` (the shared separable driver; the slack
/// lets the stride-2 path read a vector pair past the last used column).
#[target_feature(enable = "avx512f,avx512bw")]
pub fn max_pool(call: &MaxPoolCall, input: &[u8], out: &mut [u8]) {
    // The closures inherit this function's target features.
    max_pool_separable(
        call,
        input,
        out,
        128,
        |plane, w, rows, dst| fold_rows(plane, w, rows, dst),
        |row, taps, dilation, stride, dst| fold_columns(row, taps, dilation, stride, dst),
    );
}

/// `dst[x] = max over r in rows of plane[r·w + x]` (0 for no rows).
#[target_feature(enable = "avx512f,avx512bw")]
fn fold_rows(plane: &[u8], w: usize, rows: &[usize], dst: &mut [u8]) {
    let vectors = w / 64;
    for v in 0..vectors {
        let mut m = _mm512_setzero_si512();
        for &r in rows {
            m = _mm512_max_epu8(m, load(plane, r * w + v * 64));
        }
        store(dst, v * 64, m);
    }
    for (x, d) in dst.iter_mut().enumerate().skip(vectors * 64) {
        *d = rows.iter().map(|&r| plane[r * w + x]).max().unwrap_or(0);
    }
}

/// `dst[o] = max over k < taps of row[o·stride + k·dilation]`.
#[target_feature(enable = "avx512f,avx512bw")]
fn fold_columns(row: &[u8], taps: usize, dilation: usize, stride: usize, dst: &mut [u8]) {
    let vectors = match stride {
        1 | 2 => dst.len() / 64,
        _ => 0,
    };
    let even = _mm512_set1_epi16(0x00ff);
    // `vpackuswb` interleaves the two sources' quadwords per 128-bit lane: put them in order.
    let order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    for v in 0..vectors {
        let o = v * 64;
        let mut m = _mm512_setzero_si512();
        for k in 0..taps {
            let at = o * stride + k * dilation;
            let v = match stride {
                1 => load(row, at),
                // The even bytes of 128: the low byte of each 16-bit lane, packed, reordered.
                _ => {
                    let a = _mm512_and_si512(load(row, at), even);
                    let b = _mm512_and_si512(load(row, at + 64), even);
                    _mm512_permutexvar_epi64(order, _mm512_packus_epi16(a, b))
                }
            };
            m = _mm512_max_epu8(m, v);
        }
        store(dst, o, m);
    }
    for (o, d) in dst.iter_mut().enumerate().skip(vectors * 64) {
        *d = (0..taps)
            .map(|k| row[o * stride + k * dilation])
            .max()
            .unwrap_or(0);
    }
}

/// `out[i] = table[input[i]]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub fn lookup(table: &[u8; 256], input: &[u8], out: &mut [u8]) {
    let n = out.len().min(input.len());
    let [t0, t1, t2, t3] = std::array::from_fn(|k| load(table, k * 64));
    let mut i = 0;
    while i < n {
        let len = (n - i).min(64);
        let mask: __mmask64 = if len == 64 { !0 } else { (1u64 << len) - 1 };
        // SAFETY: the mask covers `len` bytes, all inside `input[i..]` and `out[i..]`.
        unsafe {
            let x = _mm512_maskz_loadu_epi8(mask, input[i..].as_ptr() as *const i8);
            let lo = _mm512_permutex2var_epi8(t0, x, t1);
            let hi = _mm512_permutex2var_epi8(t2, x, t3);
            let y = _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), lo, hi);
            _mm512_mask_storeu_epi8(out[i..].as_mut_ptr() as *mut i8, mask, y);
        }
        i += len;
    }
}
