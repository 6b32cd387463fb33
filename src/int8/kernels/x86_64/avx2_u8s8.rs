//! The u8 × s8 GEMM (`vpmaddubsw`): four taps per i32 lane, a third fewer vector operations per
//! multiply-add than the i16 path, half the input bytes.
//!
//! `vpmaddubsw` sums two u8 × s8 products into a *saturating* i16, so it is exact only when
//! `|q_in·w + q_in'·w'| ≤ 32767`. That holds when every input value is ≤ 127 (`127·128·2 = 32512`)
//! — the case of every model quantized with `reduce_range` activations, PyTorch's x86/fbgemm
//! default for exactly this reason — and the weights are symmetric (zero-point 0, so `w = q_w`).
//! The caller checks both per input block; otherwise that block takes the i16 path. Inputs are not shifted by their
//! zero-point: padding taps hold the zero-point and each row subtracts `z_in · Σ_k w[o, k]`
//! (folded into the int32 bias), which gives the exact `Σ (q_in − z_in)·w` of the reference.

use std::arch::x86_64::*;

use super::super::packed::{MR, NR, PackedWeightsS8};
use super::avx2::{OutRq, RowRq, requant16, row_rq};
use crate::int8::requant::Requant;

/// Whether every byte is ≤ 127 (no `vpmaddubsw` pair can saturate): 32 bytes at a time, then 8
/// (a small-k tile's check is on the critical path of its few multiply-adds).
#[target_feature(enable = "avx2")]
pub(super) fn fits_u7(data: &[u8]) -> bool {
    let mut any = _mm256_setzero_si256();
    let chunks = data.chunks_exact(32);
    let rest = chunks.remainder();
    for chunk in chunks {
        // SAFETY: chunk is 32 bytes.
        any = _mm256_or_si256(any, unsafe {
            _mm256_loadu_si256(chunk.as_ptr() as *const __m256i)
        });
    }
    let words = rest.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u8, |acc, &v| acc | v);
    let high = words.fold(0u64, |acc, w| {
        acc | u64::from_le_bytes(w.try_into().expect("8 bytes"))
    });
    _mm256_movemask_epi8(any) == 0 && high & 0x8080_8080_8080_8080 == 0 && tail < 128
}

/// The `MR × NR` microkernel over tap quads.
#[target_feature(enable = "avx2")]
pub(super) fn tile(a: &[i8], b: &[u8], rows: &[RowRq; MR], o: OutRq) -> [__m128i; MR] {
    let quads = b.len() / (NR * 4);
    assert!(a.len() >= quads * MR * 4 && b.len() >= quads * NR * 4);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for kq in 0..quads {
        // SAFETY: kq < quads, and both slices hold `quads` full quads (asserted above).
        let (b0, b1, w) = unsafe {
            let bq = bp.add(kq * NR * 4) as *const __m256i;
            (
                _mm256_loadu_si256(bq),
                _mm256_loadu_si256(bq.add(1)),
                ap.add(kq * MR * 4) as *const i32,
            )
        };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: w points at MR quads of i8 inside `a`.
            let wr = _mm256_set1_epi32(unsafe { w.add(r).read_unaligned() });
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(b0, wr), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(b1, wr), ones);
            acc[0] = _mm256_add_epi32(acc[0], p0);
            acc[1] = _mm256_add_epi32(acc[1], p1);
        }
    }
    std::array::from_fn(|r| requant16(acc[r], [rows[r]; 2], o))
}

/// Packs block `block` of a 1×1 stride-1 convolution's input (`[c, pixels]`) as
/// `[c/4][NR pixels][4]` bytes.
#[target_feature(enable = "avx2")]
pub(super) fn pack_pointwise(image: &[u8], c: usize, pixels: usize, block: usize, dst: &mut [u8]) {
    let first = block * NR;
    if first + NR > pixels {
        dst.fill(0);
        for (ch, plane) in image.chunks_exact(pixels).enumerate().take(c) {
            let row = &mut dst[(ch / 4) * NR * 4 + ch % 4..];
            for (q, &v) in plane[first..].iter().enumerate() {
                row[q * 4] = v;
            }
        }
        return;
    }
    let row = |ch: usize| -> __m128i {
        if ch >= c {
            return _mm_setzero_si128();
        }
        let src = &image[ch * pixels + first..][..NR];
        // SAFETY: src is 16 bytes.
        unsafe { _mm_loadu_si128(src.as_ptr() as *const __m128i) }
    };
    for (quad, out) in dst.chunks_exact_mut(NR * 4).enumerate() {
        let quads = interleave4([0, 1, 2, 3].map(|i| row(4 * quad + i)));
        for (i, q) in quads.into_iter().enumerate() {
            // SAFETY: out is 64 bytes: four 16-byte stores.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().add(16 * i) as *mut __m128i, q) };
        }
    }
}

/// Four rows of 16 bytes as 16 dwords of one byte from each row: dword `q` of the result
/// (vector `q / 4`, lane `q % 4`) is `[r0[q], r1[q], r2[q], r3[q]]` — a 4 × 16 byte transpose.
#[target_feature(enable = "avx2")]
pub(super) fn interleave4([r0, r1, r2, r3]: [__m128i; 4]) -> [__m128i; 4] {
    let (t0, t1) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
    let (t2, t3) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
    [
        _mm_unpacklo_epi16(t0, t2),
        _mm_unpackhi_epi16(t0, t2),
        _mm_unpacklo_epi16(t1, t3),
        _mm_unpackhi_epi16(t1, t3),
    ]
}

/// The per-row requantization of the u8 × s8 kernel: the i16 kernel's, with
/// `z_in · Σ_k w[o, k]` subtracted in the int32 bias (one entry per panel row).
#[target_feature(enable = "avx2")]
pub(super) fn rows(a: &PackedWeightsS8, rq: &Requant, zp: i32) -> Vec<RowRq> {
    let m = a.rows();
    (0..a.panels() * MR)
        .map(|r| {
            let ch = r.min(m - 1);
            let mut row = row_rq(rq, ch);
            let bias = rq.bias_i32()[ch].wrapping_sub(zp.wrapping_mul(a.row_sums()[ch]));
            row.bias_i32 = _mm256_set1_epi32(bias);
            row
        })
        .collect()
}
