//! AVX2 int8 kernels (x86-64 with AVX2, detected at run time).
//!
//! * Dense convolutions with symmetric weights (every ungrouped one of PyTorch's quantized
//!   models: 1×1 at any stride, 3×3, the stems) run channels-last, NHWC in and out, as implicit
//!   GEMMs with no packing: [`super::avx2_dense`] ([`Avx2::conv2d_formats`] asks for NHWC
//!   inputs there, NCHW only for the 3-channel stems' padded copy).
//! * Other dense convolutions (asymmetric weights): packed GEMM over NCHW; input blocks whose
//!   bytes are all ≤ 127 take the u8 × s8 kernel of [`super::avx2_u8s8`], others
//!   ([`super::super::gemm`]), `vpmaddwd` on tap pairs — i16 × i16 products summed in pairs into
//!   i32 lanes, exact for any zero-points (|q − z| ≤ 255, so a pair sums to at most 130,050).
//! * Depthwise 3×3 and 5×5 convolutions with stride 1 or 2: channels-last
//!   ([`super::avx2_dw_nhwc`], chosen through [`Int8Kernels::conv2d_formats`]); other
//!   depthwise ones, on NCHW: [`super::avx2_depthwise`].
//! * Linear: one `vpmaddwd` dot product per output.
//! * Add: [`super::avx2_add`].
//!
//! Every output goes through [`requant16`], the vector form of [`Requant::apply`]: the same f32
//! operations in the same order, `vcvtps2dq` rounding ties to even, so the results are the
//! [`Reference`](crate::int8::Reference) kernels' bit for bit (`tests/it/int8_kernels.rs`).
//! Other ops (grouped convolutions, pooling) run the portable [`Direct`] kernels.
//!
//! All `unsafe` here is either a call into the `#[target_feature(enable = "avx2")]` functions,
//! made only through an [`Avx2`] value (which exists only when the CPU has AVX2; closures inside
//! them inherit the feature), or an unaligned load/store whose bounds the code beside it checks.

use std::arch::x86_64::*;

use super::super::level::{self, KernelLevel};

use super::super::gemm::{self, OutPtr, tile_extent};
use super::super::packed::{Im2col, MR, NR, PackedWeights, PaddedImage, PaddedImageU8};
use super::super::{ConvCall, Direct, Int8Kernels, elementwise};
use super::avx2_dense;
use super::avx2_depthwise::conv_depthwise;
use super::avx2_dw_nhwc;
use super::avx2_u8s8;
use super::dense_nhwc;
use crate::int8::add::AddParams;
use crate::int8::conv::Int8Conv2d;
use crate::int8::linear::Int8Linear;
use crate::int8::pool::PoolParams;
use crate::int8::requant::Requant;
use crate::int8::tensor::{MemoryFormat, QTensor};

/// The AVX2 kernels. Obtain one with [`Avx2::detect`].
#[derive(Debug, Clone, Copy)]
pub struct Avx2 {
    _cpu_has_avx2: (),
}

impl Avx2 {
    /// The AVX2 kernels, if this CPU has AVX2 and FMA (every AVX2 CPU from Haswell and Zen on).
    pub fn detect() -> Option<Self> {
        (level::allows(KernelLevel::Avx2)
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma"))
        .then_some(Avx2 { _cpu_has_avx2: () })
    }
}

/// One output channel's requantization, broadcast to 8 lanes.
#[derive(Clone, Copy)]
pub(super) struct RowRq {
    pub(super) bias_i32: __m256i,
    pub(super) bias_f32: __m256,
    pub(super) multiplier: __m256,
}

/// The output stage shared by every row: the zero-point as i16 lanes, the clamp as u8 lanes.
#[derive(Clone, Copy)]
pub(super) struct OutRq {
    zero_point: __m256i,
    lo: __m256i,
    hi: __m256i,
}

#[target_feature(enable = "avx2")]
pub(super) fn row_rq(rq: &Requant, c: usize) -> RowRq {
    // Both engines as one formula: ((acc + bias_i32) as f32 + bias_f32) · m, where qnnpack's
    // bias_f32 and x86's bias_i32 are zero (adding +0.0 changes no value that rounding sees).
    RowRq {
        bias_i32: _mm256_set1_epi32(rq.bias_i32()[c]),
        bias_f32: _mm256_set1_ps(rq.bias_f32()[c]),
        multiplier: _mm256_set1_ps(rq.multipliers()[c]),
    }
}

#[target_feature(enable = "avx2")]
pub(super) fn out_rq(rq: &Requant) -> OutRq {
    let (zp, lo, hi) = rq.output_range();
    OutRq {
        zero_point: _mm256_set1_epi16(zp as i16),
        lo: _mm256_set1_epi8(lo as i8),
        hi: _mm256_set1_epi8(hi as i8),
    }
}

/// The requantization of `groups` groups of 8 output channels (lanes past the last of
/// `channels` repeat it) for raw `q_in` with zero-point `zp`: each lane's int32 bias less
/// `zp · Σ w` (its channel's weight sum, `weight_sum`), which makes `Σ q_in · w` the reference's
/// `Σ (q_in − zp) · w` exactly (wrapping i32 arithmetic is associative).
#[target_feature(enable = "avx2")]
pub(super) fn lane_rows(
    rq: &Requant,
    (groups, channels): (usize, usize),
    zp: i32,
    weight_sum: impl Fn(usize) -> i32,
) -> Vec<RowRq> {
    let (bi, bf, mu) = (rq.bias_i32(), rq.bias_f32(), rq.multipliers());
    (0..groups)
        .map(|g| {
            let ch = |j: usize| (g * 8 + j).min(channels - 1);
            let i32s: [i32; 8] =
                std::array::from_fn(|j| bi[ch(j)].wrapping_sub(zp.wrapping_mul(weight_sum(ch(j)))));
            let f32s: [f32; 8] = std::array::from_fn(|j| bf[ch(j)]);
            let mults: [f32; 8] = std::array::from_fn(|j| mu[ch(j)]);
            // SAFETY: each array is 8 lanes of 4 bytes.
            unsafe {
                RowRq {
                    bias_i32: _mm256_loadu_si256(i32s.as_ptr() as *const __m256i),
                    bias_f32: _mm256_loadu_ps(f32s.as_ptr()),
                    multiplier: _mm256_loadu_ps(mults.as_ptr()),
                }
            }
        })
        .collect()
}

/// [`Requant::apply`]'s rounded value of 8 accumulators, before the saturation.
#[target_feature(enable = "avx2")]
fn round8(acc: __m256i, row: RowRq) -> __m256i {
    round8_started(_mm256_add_epi32(acc, row.bias_i32), row)
}

/// [`round8`] of accumulators that started at `row.bias_i32`.
#[target_feature(enable = "avx2")]
fn round8_started(acc: __m256i, row: RowRq) -> __m256i {
    let f = _mm256_cvtepi32_ps(acc);
    _mm256_cvtps_epi32(_mm256_mul_ps(
        _mm256_add_ps(f, row.bias_f32),
        row.multiplier,
    ))
}

/// [`Requant::apply`] on two vectors of 8 accumulators: their 16 output bytes, in order.
///
/// The scalar saturation `clamp(clamp(clamp(r, i16) + z, i16), lo, hi)` is step by step
/// `packs_epi32` (to i16), `adds_epi16` of the zero-point, `packus_epi16` (to u8, which
/// `[lo, hi] ⊆ [0, 255]` makes no difference to) and the clamp as bytes.
#[target_feature(enable = "avx2")]
pub(super) fn requant16(acc: [__m256i; 2], rows: [RowRq; 2], o: OutRq) -> __m128i {
    let (a, b) = (round8(acc[0], rows[0]), round8(acc[1], rows[1]));
    let words = _mm256_adds_epi16(_mm256_packs_epi32(a, b), o.zero_point);
    let bytes = _mm256_min_epu8(
        _mm256_max_epu8(_mm256_packus_epi16(words, words), o.lo),
        o.hi,
    );
    // dwords now: [a0-3, b0-3, a0-3, b0-3 | a4-7, b4-7, a4-7, b4-7]
    _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
        bytes,
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    ))
}

/// [`requant16`] on two pairs of vectors at once, of accumulators that started at their rows'
/// `bias_i32` (which saves the add): the 32 bytes of `acc[0], acc[1]` then `acc[2], acc[3]`.
#[target_feature(enable = "avx2")]
pub(super) fn requant32(acc: [__m256i; 4], rows: [RowRq; 4], o: OutRq) -> __m256i {
    saturate32(std::array::from_fn(|i| round8_started(acc[i], rows[i])), o)
}

/// The saturation of [`requant16`] on four vectors of rounded values: their 32 bytes in order.
#[target_feature(enable = "avx2")]
fn saturate32(r: [__m256i; 4], o: OutRq) -> __m256i {
    let lo = _mm256_adds_epi16(_mm256_packs_epi32(r[0], r[1]), o.zero_point);
    let hi = _mm256_adds_epi16(_mm256_packs_epi32(r[2], r[3]), o.zero_point);
    let bytes = _mm256_min_epu8(_mm256_max_epu8(_mm256_packus_epi16(lo, hi), o.lo), o.hi);
    // dwords now: [a0-3, b0-3, c0-3, d0-3 | a4-7, b4-7, c4-7, d4-7]
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// The `MR × NR` microkernel: `acc[r][q] = Σ_pairs a[pair][r] · b[pair][q]` (two taps per
/// `vpmaddwd`), then requantized: 16 output bytes per row.
#[target_feature(enable = "avx2")]
fn tile(a: &[i16], b: &[i16], rows: &[RowRq; MR], o: OutRq) -> [__m128i; MR] {
    let pairs = b.len() / (NR * 2);
    assert!(a.len() >= pairs * MR * 2 && b.len() >= pairs * NR * 2);
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for kp in 0..pairs {
        // SAFETY: kp < pairs, and both slices hold `pairs` full pairs (asserted above).
        let (b0, b1, w) = unsafe {
            let bq = bp.add(kp * NR * 2) as *const __m256i;
            (
                _mm256_loadu_si256(bq),
                _mm256_loadu_si256(bq.add(1)),
                ap.add(kp * MR * 2) as *const i32,
            )
        };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: w points at MR (i16, i16) pairs inside `a`.
            let wr = _mm256_set1_epi32(unsafe { w.add(r).read_unaligned() });
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(wr, b0));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(wr, b1));
        }
    }
    std::array::from_fn(|r| requant16(acc[r], [rows[r]; 2], o))
}

/// Stores the first `rows` rows and `cols` columns of a tile whose first byte goes to `at`
/// (rows `stride` apart).
///
/// # Safety
/// Every byte written (`at + r·stride + q`, `r < rows`, `q < cols ≤ NR`) must lie inside the
/// allocation behind `ptr` and belong to this tile alone.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_tile(
    ptr: OutPtr,
    tile: &[__m128i; MR],
    (rows, cols): (usize, usize),
    at: usize,
    stride: usize,
) {
    for (r, &v) in tile.iter().enumerate().take(rows) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let dst = ptr.at(at + r * stride);
            if cols == NR {
                _mm_storeu_si128(dst as *mut __m128i, v);
            } else {
                let mut bytes = [0u8; NR];
                _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, v);
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, cols);
            }
        }
    }
}

/// Stores the first `rows` rows and `cols` columns of a tile transposed into a channels-last
/// image with `m` channels: row `r` (channel `ch0 + r`) of column `q` (pixel `p0 + q`) goes to
/// `(p0 + q)·m + ch0 + r`, one dword of four channels per pixel for a full tile.
///
/// # Safety
/// As [`store_tile`]: every byte written lies inside the allocation and belongs to this tile.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_tile_nhwc(
    ptr: OutPtr,
    tile: &[__m128i; MR],
    (rows, cols): (usize, usize),
    (ch0, p0): (usize, usize),
    m: usize,
) {
    const { assert!(MR == 4, "a full tile is one dword per pixel") };
    let mut bytes = [[0u8; 4]; NR];
    if rows == MR {
        // Interleave rows byte by byte, then the row pairs by byte pairs: pixel q's four
        // channels end up in dword q.
        let quads = avx2_u8s8::interleave4(*tile);
        for (i, q) in quads.into_iter().enumerate() {
            // SAFETY: `bytes` is 64 bytes: four 16-byte stores.
            unsafe { _mm_storeu_si128(bytes.as_mut_ptr().add(4 * i) as *mut __m128i, q) };
        }
    } else {
        let mut lanes = [[0u8; NR]; MR];
        for (lane, &v) in lanes.iter_mut().zip(tile) {
            // SAFETY: a lane row is 16 bytes.
            unsafe { _mm_storeu_si128(lane.as_mut_ptr() as *mut __m128i, v) };
        }
        for (q, px) in bytes.iter_mut().enumerate() {
            *px = std::array::from_fn(|r| lanes[r][q]);
        }
    }
    for (q, px) in bytes.iter().enumerate().take(cols) {
        // SAFETY: in bounds by the caller's contract; the first `rows` bytes are this tile's.
        unsafe { std::ptr::copy_nonoverlapping(px.as_ptr(), ptr.at((p0 + q) * m + ch0), rows) };
    }
}

/// Packs block `block` of a 1×1 stride-1 convolution's input (`[c, pixels]`): for every pair of
/// channels, 16 pixels of each, zero-point removed, interleaved.
#[target_feature(enable = "avx2")]
fn pack_pointwise(image: &[u8], c: usize, pixels: usize, zp: i16, block: usize, dst: &mut [i16]) {
    let first = block * NR;
    let zpv = _mm256_set1_epi16(zp);
    if first + NR > pixels {
        let geo = Im2col {
            c,
            h: 1,
            w: pixels,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: 0,
            ow: pixels,
            pixels,
        };
        return geo.pack_block(image, zp, block, dst);
    }
    let row = |ch: usize| -> __m256i {
        if ch >= c {
            return _mm256_setzero_si256();
        }
        let src = &image[ch * pixels + first..][..NR];
        // SAFETY: src is 16 bytes.
        let v = unsafe { _mm_loadu_si128(src.as_ptr() as *const __m128i) };
        _mm256_sub_epi16(_mm256_cvtepu8_epi16(v), zpv)
    };
    for (pair, out) in dst.chunks_exact_mut(NR * 2).enumerate() {
        let (a, b) = (row(2 * pair), row(2 * pair + 1));
        let (lo, hi) = (_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b));
        // SAFETY: out is 32 i16 = two vectors.
        unsafe {
            let p = out.as_mut_ptr() as *mut __m256i;
            _mm256_storeu_si256(p, _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256(p.add(1), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
    }
}

/// The u8 × s8 microkernel a dense convolution runs on input blocks packed as bytes
/// (`[k/4][NR pixels][4]`, against [`PackedWeightsS8`](super::super::packed::PackedWeightsS8)
/// panels): `vpmaddubsw` on AVX2 ([`avx2_u8s8`]), `vpdpbusd` with AVX-512 VNNI.
pub(super) trait U8Tile: Copy + Sync {
    /// Whether any byte is exact; `false` when pairs of products saturate at i16
    /// (`vpmaddubsw`), so only blocks whose bytes are all ≤ 127 may take this kernel.
    const FULL_RANGE: bool;

    /// One `MR × NR` tile, requantized (as [`tile`]).
    ///
    /// # Safety
    /// The CPU has the features the implementing kernel set was detected with.
    unsafe fn tile(self, a: &[i8], b: &[u8], rows: &[RowRq; MR], o: OutRq) -> [__m128i; MR];
}

/// The AVX2 u8 × s8 microkernel ([`avx2_u8s8::tile`]).
#[derive(Clone, Copy)]
struct Maddubs;

impl U8Tile for Maddubs {
    const FULL_RANGE: bool = false;

    unsafe fn tile(self, a: &[i8], b: &[u8], rows: &[RowRq; MR], o: OutRq) -> [__m128i; MR] {
        // SAFETY: the caller runs on a CPU with AVX2.
        unsafe { avx2_u8s8::tile(a, b, rows, o) }
    }
}

/// A dense convolution as packed GEMM, image by image, from an NCHW input into an `out`
/// stored in `out_format`. Each input block takes the u8 × s8 kernel `u8_tile` when the
/// weights allow it (and, unless it is [`U8Tile::FULL_RANGE`], the block's bytes are all
/// ≤ 127), else the i16 kernel; all are exact, so the choice changes only the speed.
#[target_feature(enable = "avx2")]
pub(super) fn conv_gemm<T: U8Tile>(
    op: &Int8Conv2d,
    a: &PackedWeights,
    rq: &Requant,
    (input, out): (&QTensor, &mut [u8]),
    out_format: MemoryFormat,
    u8_tile: T,
) {
    let Some(ConvCall {
        n,
        c,
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        stride,
        pad,
    }) = ConvCall::of(op, input)
    else {
        return;
    };
    let geo = Im2col {
        c,
        h,
        w,
        kh,
        kw,
        stride,
        pad,
        ow,
        pixels: oh * ow,
    };
    let (m, plane) = (op.out_channels(), oh * ow);
    let zp = input.qparams().zero_point;
    let o = out_rq(rq);
    let rows: Vec<RowRq> = (0..a.panels() * MR)
        .map(|r| row_rq(rq, r.min(m - 1)))
        .collect();
    let s8 = op
        .gemm_weights_s8()
        .map(|a8| (a8, avx2_u8s8::rows(a8, rq, zp)));
    let block16 = a.pairs() * NR * 2;
    let block8 = s8.as_ref().map_or(0, |(a8, _)| a8.quads() * NR * 4);
    let mut padded = PaddedImage::default();
    let mut padded8 = PaddedImageU8::default();
    for b in 0..n {
        let image = &input.data()[b * c * h * w..][..c * h * w];
        let dst = &mut out[b * m * plane..][..m * plane];
        let ptr = OutPtr(dst.as_mut_ptr());
        // A strided or padded im2col gathers each value kh·kw times, so it is packed one way
        // only: as u8 when the whole image allows it (and the zero-point, which pads), else i16.
        // The 1×1 case packs cheaply and decides per block.
        let mut try_u8 = s8.is_some();
        if !geo.is_identity() {
            try_u8 &= T::FULL_RANGE || (zp < 128 && avx2_u8s8::fits_u7(image));
            if try_u8 {
                padded8.fill(&geo, image, zp as u8);
            } else {
                padded.fill(&geo, image, zp as i16);
            }
        }
        // Returns whether the block was packed as u8 quads.
        let pack = |block: usize, buf: &mut [i16]| -> bool {
            if try_u8 {
                // SAFETY: any i16 storage is valid as bytes, and u8 needs no alignment.
                let bytes = &mut unsafe { buf.align_to_mut::<u8>() }.1[..block8];
                if geo.is_identity() {
                    avx2_u8s8::pack_pointwise(image, c, plane, block, bytes)
                } else {
                    padded8.pack_block(&geo, block, bytes)
                }
                if T::FULL_RANGE || avx2_u8s8::fits_u7(bytes) {
                    return true;
                }
            }
            let buf = &mut buf[..block16];
            if geo.is_identity() {
                pack_pointwise(image, c, plane, zp as i16, block, buf)
            } else {
                padded.pack_block(&geo, block, buf)
            }
            false
        };
        let compute = |panel: usize, block: usize, bp: &[i16], as_u8: bool| {
            let (nr, nc) = tile_extent(m, plane, panel, block);
            let t = match &s8 {
                Some((a8, rows8)) if as_u8 => {
                    // SAFETY: as in `pack`.
                    let bytes = &unsafe { bp.align_to::<u8>() }.1[..block8];
                    let rows = rows8[panel * MR..][..MR].try_into().expect("MR rows");
                    // SAFETY: `u8_tile` came from a kernel set detected on this CPU.
                    unsafe { u8_tile.tile(a8.panel(panel), bytes, rows, o) }
                }
                _ => {
                    let rows = rows[panel * MR..][..MR].try_into().expect("MR rows");
                    tile(a.panel(panel), &bp[..block16], rows, o)
                }
            };
            // SAFETY: the tile's rows and columns lie inside `dst`, and tiles never overlap.
            unsafe {
                match out_format {
                    MemoryFormat::Contiguous => {
                        store_tile(ptr, &t, (nr, nc), (panel * MR) * plane + block * NR, plane)
                    }
                    MemoryFormat::ChannelsLast => {
                        store_tile_nhwc(ptr, &t, (nr, nc), (panel * MR, block * NR), m)
                    }
                }
            };
        };
        let extent = gemm::Extent {
            rows: m,
            depth: a.depth(),
            panels: a.panels(),
            cols: plane,
            block_len: block16.max(block8.div_ceil(2)),
        };
        gemm::run(extent, pack, compute);
    }
}

/// `Σ a[i]·b[i]` over equally long i16 slices.
#[target_feature(enable = "avx2")]
fn dot(a: &[i16], b: &[i16]) -> i32 {
    let n = a.len().min(b.len());
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n.
        let (x, y) = unsafe {
            (
                _mm256_loadu_si256(a.as_ptr().add(i) as *const __m256i),
                _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i),
            )
        };
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
        i += 16;
    }
    dot_finish(acc, &a[i..n], &b[i..n])
}

/// The end of a dot product: `Σ a[i]·b[i]` over the tails the vector loop left, plus the 8
/// lanes of its accumulator (wrapping, as the reference's i32 sum).
#[target_feature(enable = "avx2")]
fn dot_finish<B: Copy + Into<i32>>(acc: __m256i, a: &[i16], b: &[B]) -> i32 {
    let mut lanes = [0i32; 8];
    // SAFETY: lanes is 8 i32.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
    let tail = a
        .iter()
        .zip(b)
        .fold(0i32, |s, (&x, &y)| s.wrapping_add(x as i32 * y.into()));
    lanes.iter().fold(tail, |s, &v| s.wrapping_add(v))
}

/// [`dot`] with i8 `b`, widened 16 at a time as it is loaded (a batch-1 classifier reads its
/// weights once a pass: half the bytes of i16 ones), in two accumulators.
#[target_feature(enable = "avx2")]
fn dot_i8(a: &[i16], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_si256(); 2];
    let mut i = 0;
    while i + 32 <= n {
        for (h, acc) in acc.iter_mut().enumerate() {
            let at = i + 16 * h;
            // SAFETY: at + 16 ≤ n.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(at) as *const __m256i),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(at) as *const __m128i)),
                )
            };
            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(x, y));
        }
        i += 32;
    }
    dot_finish(_mm256_add_epi32(acc[0], acc[1]), &a[i..n], &b[i..n])
}

/// A convolution of an NCHW input with the given u8 × s8 microkernel: packed GEMM for dense
/// ones (writing `out` in `dense_out`), [`conv_depthwise`] for depthwise ones with stride ≤ 2,
/// [`Direct`] for the rest (grouped); those two write NCHW.
#[target_feature(enable = "avx2")]
pub(super) fn conv2d_with<T: U8Tile>(
    op: &Int8Conv2d,
    rq: &Requant,
    (input, out): (&QTensor, &mut [u8]),
    dense_out: MemoryFormat,
    u8_tile: T,
) {
    let spec = op.spec();
    let c = input.shape()[1];
    if let Some(a) = op.gemm_weights() {
        conv_gemm(op, a, rq, (input, out), dense_out, u8_tile)
    } else if spec.groups == c && op.out_channels() == c && spec.stride <= 2 {
        conv_depthwise(op, rq, input, out)
    } else {
        Direct.conv2d(op, rq, input, out)
    }
}

impl Int8Kernels for Avx2 {
    fn conv2d_formats(&self, op: &Int8Conv2d, shape: &[usize]) -> (MemoryFormat, MemoryFormat) {
        use MemoryFormat::{ChannelsLast, Contiguous};
        if avx2_dw_nhwc::takes(op) {
            return (ChannelsLast, ChannelsLast);
        }
        match dense_nhwc::input_kind(op, shape) {
            Some(kind) => (dense_nhwc::input_format(kind, shape), ChannelsLast),
            None => (Contiguous, Contiguous),
        }
    }

    fn conv2d(&self, op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        if avx2_dw_nhwc::takes(op) {
            // SAFETY: `self` exists only on CPUs with AVX2.
            return unsafe { avx2_dw_nhwc::conv_depthwise(op, rq, input, out) };
        }
        if let Some(kind) = dense_nhwc::input_kind(op, input.shape()) {
            let x = input.to_format(dense_nhwc::input_format(kind, input.shape()));
            // SAFETY: `self` exists only on CPUs with AVX2.
            return unsafe { avx2_dense::conv_dense(op, kind, rq, &x, out) };
        }
        // SAFETY: `self` exists only on CPUs with AVX2.
        unsafe { conv2d_with(op, rq, (input, out), MemoryFormat::Contiguous, Maddubs) }
    }

    fn linear(&self, op: &Int8Linear, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        let (k, m) = (op.in_features(), op.out_features());
        let zp = input.qparams().zero_point as i16;
        let (wt, w8) = (op.packed_weight(), op.symmetric_weight());
        let x = input.data();
        let rows = out.len() / m.max(1);
        // Tasks of whole rows of `out` when there are enough rows, else of runs of one row's
        // features (batch 1).
        let tasks = super::super::tasks_for(rows * m * k, 1 << 20);
        let split = tasks.div_ceil(rows).clamp(1, m.max(1));
        let per = m.div_ceil(split);
        let ptr = OutPtr(out.as_mut_ptr());
        super::super::team::parallel_for(rows * split, |t| {
            let (row, part) = (t / split, t % split);
            let xs: Vec<i16> = x[row * k..][..k].iter().map(|&q| q as i16 - zp).collect();
            for o in part * per..((part + 1) * per).min(m) {
                // SAFETY: `self` exists only on CPUs with AVX2.
                let acc = unsafe {
                    match w8 {
                        Some(w8) => dot_i8(&xs, &w8[o * k..][..k]),
                        None => dot(&xs, &wt[o * k..][..k]),
                    }
                };
                // SAFETY: each (row, o) is written by one task, inside `out` ([rows, m]), and
                // parallel_for returns once every task has run.
                unsafe { *ptr.at(row * m + o) = rq.apply(o, acc) };
            }
        });
    }

    fn add(&self, p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]) {
        // SAFETY: `self` exists only on CPUs with AVX2 and FMA.
        elementwise(a, b, out, |a, b, out| unsafe {
            super::avx2_add::add(p, a, b, out)
        })
    }

    fn global_avg_pool(&self, p: &PoolParams, input: &QTensor, out: &mut [u8]) {
        Direct.global_avg_pool(p, input, out)
    }
}
