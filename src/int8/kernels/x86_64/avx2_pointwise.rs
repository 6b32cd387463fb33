//! AVX2 pointwise convolutions (1×1, stride 1, unpadded, symmetric weights, a multiple of 4
//! input channels) from a channels-last input into a channels-last output: an implicit GEMM
//! `y[p, o] = Σ_k x_p[k]·w[o, k]` that reads the NHWC input in place, with no packing.
//!
//! A pixel's channels `4q..4q + 3` are one dword of the input. A tile is [`PX`] pixels × one
//! panel of 16 output channels (the [`LANE_ROWS`]-row panels the AVX-512 kernels use, built
//! when the layer is prepared: per tap quad, 16 rows × 4 taps = two 32-byte halves of 8
//! channels). Per quad it loads the panel's two halves and broadcasts each pixel's dword;
//! `vpmaddubsw(dword, half)` multiplies u8 inputs by s8 weights and sums them in pairs into
//! i16, and `vpmaddwd` with ones sums the pairs into 8 i32 lanes, one per output channel:
//! 2·[`PX`] independent accumulators. Each pixel's 16 channels are requantized ([`requant8`],
//! lanes holding their own channel's parameters) and stored contiguously.
//!
//! `vpmaddubsw` saturates its i16 pair sums, so it is exact only when every input byte is
//! ≤ 127 (`127·128·2 = 32512`), the case of `reduce_range` models. Each pixel tile checks its
//! bytes; a tile with a larger byte takes the i16 kernel instead: its pixels widened to i16
//! once (a small per-thread copy, reused by every panel), then per tap pair each pixel's two
//! values broadcast against i16 weight pairs (built once per layer from the i8 panels,
//! [`WeightsI16`]) in `vpmaddwd`, exact for any byte.
//!
//! Both multiply raw `q_in` (not `q_in − z_in`): each channel's int32 bias takes
//! `z_in · Σ_k w[o, k]` off, which gives the reference's `Σ (q_in − z_in)·w` exactly (wrapping
//! i32 arithmetic is associative). Tiles past the last pixel recompute it instead of branching
//! and store only their own pixels; a last panel of at most 8 channels computes one half.

use std::arch::x86_64::*;

use super::super::gemm::OutPtr;
use super::super::packed::{LANE_ROWS, PackedWeightsS8};
use super::super::threads_for;
use super::avx2::{OutRq, RowRq, narrow16, out_rq, requant8};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Pixels per tile: 8 accumulators, 2 weight halves, the broadcast and the ones of 16 registers.
const PX: usize = 4;
/// Output channels per i32 vector (half a panel).
const HALF: usize = 8;
/// Multiply-adds per task (as [`super::avx512_dense`]'s): one task per thread at batch 1.
const TASK_MACS: usize = 1 << 25;

/// Whether this kernel runs `op` on an input of `shape`.
pub(super) fn takes(op: &Int8Conv2d, shape: &[usize]) -> bool {
    let spec = op.spec();
    op.lane_weights_s8().is_some()
        && op.kernel_size() == [1, 1]
        && spec.stride == 1
        && spec.padding == 0
        && shape.len() == 4
        && shape[1].is_multiple_of(4)
}

/// The i16 form of the [`LANE_ROWS`]-row panels: per panel, per tap pair, 16 rows × 2 taps
/// (two 32-byte halves of 8 channels).
type WeightsI16 = Vec<i16>;

/// What the kernel derives from a layer once per input quantization: per half panel, each
/// lane's requantization (bias less `z_in · Σ w`), and the i16 weights.
#[derive(Clone)]
struct Prepared {
    rows: Vec<RowRq>,
    w16: WeightsI16,
}

#[target_feature(enable = "avx2")]
fn prepare(rq: &Requant, a: &PackedWeightsS8, zp: i32) -> Prepared {
    let m = a.rows();
    let (bi, bf, mu) = (rq.bias_i32(), rq.bias_f32(), rq.multipliers());
    let rows = (0..a.panels() * 2)
        .map(|h| {
            let ch = |j: usize| (h * HALF + j).min(m - 1);
            let i32s: [i32; HALF] = std::array::from_fn(|j| {
                bi[ch(j)].wrapping_sub(zp.wrapping_mul(a.row_sums()[ch(j)]))
            });
            let f32s: [f32; HALF] = std::array::from_fn(|j| bf[ch(j)]);
            let mults: [f32; HALF] = std::array::from_fn(|j| mu[ch(j)]);
            // SAFETY: each array is 8 lanes of 4 bytes.
            unsafe {
                RowRq {
                    bias_i32: _mm256_loadu_si256(i32s.as_ptr() as *const __m256i),
                    bias_f32: _mm256_loadu_ps(f32s.as_ptr()),
                    multiplier: _mm256_loadu_ps(mults.as_ptr()),
                }
            }
        })
        .collect();
    // Panel quad j holds row r's taps 4j..4j+3 at 4r; pair t (taps 2t, 2t + 1) of row r goes
    // to 2r of the pair's 32 values.
    let quads = a.quads();
    let mut w16 = vec![0i16; a.panels() * quads * 2 * LANE_ROWS * 2];
    for (p, dst) in w16.chunks_exact_mut(quads * 2 * LANE_ROWS * 2).enumerate() {
        for (i, &v) in a.panel(p).iter().enumerate() {
            let (j, r, t) = (i / (LANE_ROWS * 4), (i / 4) % LANE_ROWS, i % 4);
            dst[(2 * j + t / 2) * LANE_ROWS * 2 + 2 * r + t % 2] = v as i16;
        }
    }
    Prepared { rows, w16 }
}

/// Whether every byte is ≤ 127.
#[target_feature(enable = "avx2")]
fn fits_u7(data: &[u8]) -> bool {
    let mut any = _mm256_setzero_si256();
    let chunks = data.chunks_exact(32);
    let tail = chunks.remainder().iter().fold(0u8, |acc, &v| acc | v);
    for chunk in chunks {
        // SAFETY: chunk is 32 bytes.
        any = _mm256_or_si256(any, unsafe {
            _mm256_loadu_si256(chunk.as_ptr() as *const __m256i)
        });
    }
    _mm256_movemask_epi8(any) == 0 && tail < 128
}

/// The convolution of the channels-last `input` into the channels-last `out`
/// (`op` as [`takes`]).
#[target_feature(enable = "avx2")]
pub(super) fn conv_pointwise(op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    let Some(a) = op.lane_weights_s8() else {
        return;
    };
    let s = input.shape();
    let (c, pixels, m) = (s[1], s[0] * s[2] * s[3], a.rows());
    assert_eq!(a.panel_rows(), LANE_ROWS);
    assert_eq!(a.quads() * 4, c, "a multiple of 4 channels, one tap");
    assert_eq!(input.data().len(), pixels * c);
    assert_eq!(out.len(), pixels * m, "output is [pixels, m]");
    if pixels == 0 || m == 0 {
        return;
    }
    let zp = input.qparams().zero_point;
    let prep = op
        .kernel_cache()
        .get_or_build(input.qparams(), || prepare(rq, a, zp));
    let (rows, w16) = (&prep.rows[..], &prep.w16[..]);
    let o = out_rq(rq);
    let x = input.data();
    let (panels, quads) = (a.panels(), a.quads());
    let tiles = pixels.div_ceil(PX);
    let units = tiles * panels;
    let macs = pixels * m * c;
    let threads = threads_for(macs).min(units);
    let tasks = (threads * (macs / (TASK_MACS * threads)).max(1)).min(units);
    // Panels fastest when the weights are the smaller operand (a tile's pixels stay in L1
    // while the panels stream past), pixels fastest when they are the larger.
    let pixels_fastest = panels * quads * LANE_ROWS * 4 > x.len();
    let ptr = OutPtr(out.as_mut_ptr());
    let run = |t: usize| {
        // The tile last seen: whether its bytes are ≤ 127, and else its pixels as i16.
        let mut seen: Option<(usize, bool)> = None;
        let mut wide = vec![0i16; PX * c];
        for u in units * t / tasks..units * (t + 1) / tasks {
            let (tile, panel) = if pixels_fastest {
                (u % tiles, u / tiles)
            } else {
                (u / panels, u % panels)
            };
            let p0 = tile * PX;
            let valid = PX.min(pixels - p0);
            let u7 = match seen {
                Some((at, u7)) if at == tile => u7,
                _ => {
                    let bytes = &x[p0 * c..(p0 + valid) * c];
                    let u7 = fits_u7(bytes);
                    if !u7 {
                        widen_bytes(bytes, &mut wide[..valid * c]);
                    }
                    seen = Some((tile, u7));
                    u7
                }
            };
            let xp: [*const u8; PX] =
                std::array::from_fn(|i| x[(p0 + i.min(valid - 1)) * c..].as_ptr());
            let xw: [*const i16; PX] =
                std::array::from_fn(|i| wide[i.min(valid - 1) * c..].as_ptr());
            let channels = (m - panel * LANE_ROWS).min(LANE_ROWS);
            let w8 = a.panel(panel).as_ptr();
            let w = w16[panel * quads * 2 * LANE_ROWS * 2..].as_ptr();
            // SAFETY: every pixel pointer starts c = 4·quads bytes of x (or i16 of `wide`);
            // the i8 panel holds quads · 64 bytes and the i16 one quads · 2 · 32 values.
            let acc: [[__m256i; 2]; PX] = unsafe {
                match (u7, channels > HALF) {
                    (true, true) => tile_u8::<2>(xp, w8, quads),
                    (true, false) => widen(tile_u8::<1>(xp, w8, quads)),
                    (false, true) => tile_i16::<2>(xw, w, quads),
                    (false, false) => widen(tile_i16::<1>(xw, w, quads)),
                }
            };
            let rq = [rows[2 * panel], rows[2 * panel + 1]];
            // SAFETY: each unit writes only its own pixels' channels of its panel, inside
            // `out` ([pixels, m]).
            unsafe {
                store(
                    ptr,
                    &acc[..valid],
                    (p0, panel * LANE_ROWS),
                    (channels, m),
                    rq,
                    o,
                )
            };
        }
    };
    super::super::team::parallel_for(tasks, run);
}

/// `dst[i] = src[i]` as i16 (zero-extended), 16 at a time.
#[target_feature(enable = "avx2")]
fn widen_bytes(src: &[u8], dst: &mut [i16]) {
    assert_eq!(src.len(), dst.len());
    let mut chunks = dst.chunks_exact_mut(16);
    for (s, d) in src.chunks_exact(16).zip(&mut chunks) {
        // SAFETY: 16 bytes read, 16 i16 written.
        unsafe {
            let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(s.as_ptr() as *const __m128i));
            _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, v);
        }
    }
    let done = src.len() / 16 * 16;
    for (d, &s) in chunks.into_remainder().iter_mut().zip(&src[done..]) {
        *d = s as i16;
    }
}

/// One-half accumulators as two (the second never stored).
fn widen<const N: usize>(acc: [[__m256i; 1]; N]) -> [[__m256i; 2]; N] {
    acc.map(|[a]| [a, a])
}

/// Requantizes pixel `p0 + i`'s accumulators and stores its `channels` outputs from `ch0`.
///
/// # Safety
/// Pixels `p0 .. p0 + acc.len()` × channels `ch0 .. ch0 + channels` lie inside the `[_, m]`
/// output behind `out`, and no other thread writes them.
#[target_feature(enable = "avx2")]
unsafe fn store(
    out: OutPtr,
    acc: &[[__m256i; 2]],
    (p0, ch0): (usize, usize),
    (channels, m): (usize, usize),
    rq: [RowRq; 2],
    o: OutRq,
) {
    for (i, acc) in acc.iter().enumerate() {
        let v = narrow16(requant8(acc[0], rq[0], o), requant8(acc[1], rq[1], o));
        // SAFETY: inside `out` by the caller's contract.
        unsafe {
            let dst = out.at((p0 + i) * m + ch0);
            if channels == LANE_ROWS {
                _mm_storeu_si128(dst as *mut __m128i, v);
            } else {
                let mut bytes = [0u8; LANE_ROWS];
                _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, v);
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, channels);
            }
        }
    }
}

/// The u8 × s8 accumulators of [`PX`] pixels × `H` half panels:
/// `acc[i][h][r] = Σ_q Σ_4 x_i[4q..4q + 4] · panel[q][8h + r][..4]`, exact for bytes ≤ 127.
///
/// # Safety
/// Each `x[i]` starts `4 · quads` readable bytes; `w` starts `quads · 64`.
#[target_feature(enable = "avx2")]
unsafe fn tile_u8<const H: usize>(
    x: [*const u8; PX],
    w: *const i8,
    quads: usize,
) -> [[__m256i; H]; PX] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); H]; PX];
    for q in 0..quads {
        // SAFETY: q < quads: inside every pixel's bytes and the panel (caller's contract).
        unsafe {
            let wv: [__m256i; H] = std::array::from_fn(|h| {
                _mm256_loadu_si256(w.add(q * LANE_ROWS * 4 + h * 32) as *const __m256i)
            });
            for (acc, &xi) in acc.iter_mut().zip(&x) {
                let v = _mm256_set1_epi32((xi.add(4 * q) as *const i32).read_unaligned());
                for (a, &wh) in acc.iter_mut().zip(&wv) {
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(v, wh), ones);
                    *a = _mm256_add_epi32(*a, p);
                }
            }
        }
    }
    acc
}

/// [`tile_u8`] for any bytes: per tap pair, the pixel's two values (its bytes widened to
/// i16) broadcast against the i16 weight pairs (`w` as [`WeightsI16`], `quads · 2 · 32`
/// values) in `vpmaddwd`.
///
/// # Safety
/// Each `x[i]` starts `4 · quads` readable i16; `w` starts `quads · 2 · 32`.
#[target_feature(enable = "avx2")]
unsafe fn tile_i16<const H: usize>(
    x: [*const i16; PX],
    w: *const i16,
    quads: usize,
) -> [[__m256i; H]; PX] {
    let mut acc = [[_mm256_setzero_si256(); H]; PX];
    for t in 0..2 * quads {
        // SAFETY: t < 2·quads: inside every pixel's values and the weights (caller's contract).
        unsafe {
            let wv: [__m256i; H] = std::array::from_fn(|h| {
                _mm256_loadu_si256(w.add(t * LANE_ROWS * 2 + h * 16) as *const __m256i)
            });
            for (acc, &xi) in acc.iter_mut().zip(&x) {
                let v = _mm256_set1_epi32((xi.add(2 * t) as *const i32).read_unaligned());
                for (a, &wh) in acc.iter_mut().zip(&wv) {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(v, wh));
                }
            }
        }
    }
    acc
}
