//! The u8 × s8 GEMM (`vpmaddubsw`): four taps per i32 lane, a third fewer vector operations per
//! multiply-add than the i16 path, half the input bytes.
//!
//! `vpmaddubsw` sums two u8 × s8 products into a *saturating* i16, so it is exact only when
//! `|q_in·w + q_in'·w'| ≤ 32767`. That holds when every input value is ≤ 127 (`127·128·2 = 32512`)
//! — the case of every model quantized with `reduce_range` activations, PyTorch's x86/fbgemm
//! default for exactly this reason — and the weights are symmetric (zero-point 0, so `w = q_w`).
//! The caller checks both per call; otherwise the i16 path runs. Inputs are not shifted by their
//! zero-point: padding taps hold the zero-point and each row subtracts `z_in · Σ_k w[o, k]`
//! (folded into the int32 bias), which gives the exact `Σ (q_in − z_in)·w` of the reference.

use std::arch::x86_64::*;

use super::super::gemm::{self, OutPtr, tile_extent};
use super::super::packed::{Im2col, MR, NR, PackedWeightsS8, PaddedImageU8};
use super::avx2::{OutRq, RowRq, narrow16, out_rq, requant8, row_rq, store_tile};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Whether every byte is ≤ 127 (no `vpmaddubsw` pair can saturate).
pub(super) fn fits_u7(data: &[u8]) -> bool {
    data.iter().fold(0u8, |acc, &v| acc | v) < 128
}

/// The `MR × NR` microkernel over tap quads.
#[target_feature(enable = "avx2")]
fn tile(a: &[i8], b: &[u8], rows: &[RowRq; MR], o: OutRq) -> [__m128i; MR] {
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
    std::array::from_fn(|r| {
        narrow16(
            requant8(acc[r][0], rows[r], o),
            requant8(acc[r][1], rows[r], o),
        )
    })
}

/// Packs block `block` of a 1×1 stride-1 convolution's input (`[c, pixels]`) as
/// `[c/4][NR pixels][4]` bytes.
#[target_feature(enable = "avx2")]
fn pack_pointwise(image: &[u8], c: usize, pixels: usize, block: usize, dst: &mut [u8]) {
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
        let [r0, r1, r2, r3] = [0, 1, 2, 3].map(|i| row(4 * quad + i));
        let (t0, t1) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
        let (t2, t3) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
        let quads = [
            _mm_unpacklo_epi16(t0, t2),
            _mm_unpackhi_epi16(t0, t2),
            _mm_unpacklo_epi16(t1, t3),
            _mm_unpackhi_epi16(t1, t3),
        ];
        for (i, q) in quads.into_iter().enumerate() {
            // SAFETY: out is 64 bytes: four 16-byte stores.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().add(16 * i) as *mut __m128i, q) };
        }
    }
}

/// A dense convolution on u8 × s8 (the caller checked [`fits_u7`] on the input).
#[target_feature(enable = "avx2")]
pub(super) fn conv_gemm(
    op: &Int8Conv2d,
    a: &PackedWeightsS8,
    rq: &Requant,
    input: &QTensor,
    out: &mut [u8],
) {
    let s = input.shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let Some((oh, ow)) = op.output_hw(h, w) else {
        return;
    };
    let [kh, kw] = op.kernel_size();
    let spec = op.spec();
    let geo = Im2col {
        c,
        h,
        w,
        kh,
        kw,
        stride: spec.stride,
        pad: spec.padding,
        ow,
        pixels: oh * ow,
    };
    let (m, plane) = (op.out_channels(), oh * ow);
    let zp = input.qparams().zero_point;
    let o = out_rq(rq);
    let rows: Vec<RowRq> = (0..a.panels() * MR)
        .map(|r| {
            let ch = r.min(m - 1);
            let mut row = row_rq(rq, ch);
            let bias = rq.bias_i32()[ch].wrapping_sub(zp.wrapping_mul(a.row_sums()[ch]));
            row.bias_i32 = _mm256_set1_epi32(bias);
            row
        })
        .collect();
    let mut padded = PaddedImageU8::default();
    let block_bytes = a.quads() * NR * 4;
    for b in 0..n {
        let image = &input.data()[b * c * h * w..][..c * h * w];
        let dst = &mut out[b * m * plane..][..m * plane];
        let ptr = OutPtr(dst.as_mut_ptr());
        if !geo.is_identity() {
            padded.fill(&geo, image, zp as u8);
        }
        let pack = |block: usize, buf: &mut [i16]| {
            // SAFETY: as in `bytes`; every byte written is a valid i16 half.
            let (_, bytes, _) = unsafe { buf.align_to_mut::<u8>() };
            let bytes = &mut bytes[..block_bytes];
            if geo.is_identity() {
                pack_pointwise(image, c, plane, block, bytes)
            } else {
                padded.pack_block(&geo, block, bytes)
            }
        };
        let compute = |panel: usize, block: usize, bp: &[i16]| {
            let (nr, nc) = tile_extent(m, plane, panel, block);
            let rows: &[RowRq; MR] = rows[panel * MR..][..MR].try_into().expect("MR rows");
            // SAFETY: any i16 storage is valid as bytes, and u8 needs no alignment.
            let (_, bp, _) = unsafe { bp.align_to::<u8>() };
            let t = tile(a.panel(panel), &bp[..block_bytes], rows, o);
            // SAFETY: the tile's rows and columns lie inside `dst`, and tiles never overlap.
            unsafe { store_tile(ptr, &t, (nr, nc), (panel * MR) * plane + block * NR, plane) };
        };
        let extent = gemm::Extent {
            rows: m,
            depth: a.depth(),
            panels: a.panels(),
            cols: plane,
            block_len: block_bytes.div_ceil(2),
        };
        gemm::run(extent, pack, compute);
    }
}
