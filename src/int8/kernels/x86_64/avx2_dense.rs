//! AVX2 dense convolutions into channels-last outputs: the implicit GEMMs of
//! [`super::dense_nhwc`] (1×1 at any stride, 3×3, the stems) on `vpmaddubsw`/`vpmaddwd`.
//!
//! A tile is [`PX`] pixels × one panel of 16 output channels (per tap quad, 16 rows × 4 taps =
//! two 32-byte halves of 8 channels). Per quad it loads the panel's two halves and broadcasts
//! each pixel's dword; `vpmaddubsw(dword, half)` multiplies u8 inputs by s8 weights and sums
//! them in pairs into i16, and `vpmaddwd` with ones sums the pairs into 8 i32 lanes, one per
//! output channel: 2·[`PX`] independent accumulators. Each pixel's 16 channels are
//! requantized ([`requant16`], lanes holding their own channel's parameters) and stored
//! contiguously.
//!
//! `vpmaddubsw` saturates its i16 pair sums, so it is exact only when every input byte is
//! ≤ 127 (`127·128·2 = 32512`), the case of `reduce_range` models (PyTorch's x86 default).
//! Other inputs take the i16 kernel: per tap pair each pixel's two values (its bytes widened
//! to i16) broadcast against i16 weight pairs (built from the i8 panels when first needed,
//! [`WeightsI16`]) in `vpmaddwd`, exact for any byte. An unpadded input is checked and widened
//! tile by tile for a 1×1 convolution (a small per-task copy, reused by every panel); other
//! inputs, padded or not, are checked whole, and widened whole when they have to be.
//!
//! Both multiply raw `q_in` (not `q_in − z_in`): each channel's int32 bias takes
//! `z_in · Σ_k w[o, k]` off, which gives the reference's `Σ (q_in − z_in)·w` exactly (wrapping
//! i32 arithmetic is associative). Tiles past the last pixel recompute it instead of branching
//! and store only their own pixels; a last panel of at most 8 channels computes one half.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::super::gemm::OutPtr;
use super::super::packed::{LANE_ROWS, PackedWeightsS8};
use super::avx2::{OutRq, RowRq, lane_rows, out_rq, requant16, requant32};
use super::avx2_u8s8::fits_u7;
use super::dense_nhwc::{DenseCall, DenseInput, Layout, Unit, pad_images, run_units};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Pixels per tile: 12 accumulators, two weight halves, the broadcast and the ones, one more
/// than the 16 registers (the broadcast goes through the stack once a quad). 6 beat 4 by 10–30% on the
/// ResNet-18 3×3 shapes at batch 1 on a Zen 3 (`benches/int8_kernels.rs`).
const PX: usize = 6;
/// Output channels per i32 vector (half a panel).
const HALF: usize = 8;

/// The i16 form of the [`LANE_ROWS`]-row panels: per panel, per tap pair, 16 rows × 2 taps
/// (two 32-byte halves of 8 channels).
type WeightsI16 = Vec<i16>;

/// What the kernel derives from a layer once per input quantization: per half panel, each
/// lane's requantization (bias less `z_in · Σ w`), and the i16 weights once an input needs them.
#[derive(Clone)]
struct Prepared {
    rows: Vec<RowRq>,
    w16: OnceLock<WeightsI16>,
}

#[target_feature(enable = "avx2")]
fn prepare(rq: &Requant, a: &PackedWeightsS8, zp: i32) -> Prepared {
    Prepared {
        rows: lane_rows(rq, (a.panels() * 2, a.rows()), zp, |o| a.row_sums()[o]),
        w16: OnceLock::new(),
    }
}

/// The panels of `a` as [`WeightsI16`]: panel quad j holds row r's taps 4j..4j+3 at 4r; pair t
/// (taps 2t, 2t + 1) of row r goes to 2r of the pair's 32 values.
fn weights_i16(a: &PackedWeightsS8) -> WeightsI16 {
    let quads = a.quads();
    let mut w16 = vec![0i16; a.panels() * quads * 2 * LANE_ROWS * 2];
    for (p, dst) in w16.chunks_exact_mut(quads * 2 * LANE_ROWS * 2).enumerate() {
        for (i, &v) in a.panel(p).iter().enumerate() {
            let (j, r, t) = (i / (LANE_ROWS * 4), (i / 4) % LANE_ROWS, i % 4);
            dst[(2 * j + t / 2) * LANE_ROWS * 2 + 2 * r + t % 2] = v as i16;
        }
    }
    w16
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

/// What a tile reads its input from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Bytes all ≤ 127 (checked for the whole input).
    Narrow(&'a [u8]),
    /// Bytes checked tile by tile: a 1×1 convolution's input, one `cp`-byte tap a pixel.
    Checked(&'a [u8]),
    /// Bytes with a byte above 127 in some input rows: a tile whose pixels read only rows
    /// without one takes the u8 kernel on `bytes`, others the i16 one on `wide` (the same
    /// values widened).
    Rows(&'a RowChecked<'a>),
}

impl Source<'_> {
    /// The input's bytes.
    fn bytes(&self) -> &[u8] {
        match *self {
            Source::Narrow(x) | Source::Checked(x) => x,
            Source::Rows(r) => r.bytes,
        }
    }
}

/// The convolution of `input` (in [`super::dense_nhwc::input_format`]; `kind` from
/// [`super::dense_nhwc::input_kind`]) into the channels-last `out`.
#[target_feature(enable = "avx2")]
pub(super) fn conv_dense(
    op: &Int8Conv2d,
    kind: DenseInput,
    rq: &Requant,
    input: &QTensor,
    out: &mut [u8],
) {
    let Some(a) = op.lane_weights_s8() else {
        return;
    };
    let Some(dc) = DenseCall::of(op, input) else {
        return;
    };
    let (m, zp) = (a.rows(), input.qparams().zero_point);
    let pixels = dc.pixels();
    assert_eq!(out.len(), pixels * m, "output is [pixels, m]");
    let prep = op
        .kernel_cache()
        .get_or_build(input.qparams(), || prepare(rq, a, zp));
    let (layout, macs) = (dc.layout(), dc.macs(m));
    let mut run = |x: Source| run_tiles(a, (&prep, out_rq(rq)), (x, layout), pixels, macs, out);
    // Inputs whose taps span several pixels are checked row by row, and widened whole when
    // a row has a byte above 127 (rare in a `reduce_range` model: a value past the calibrated
    // range), so that only the tiles reading such a row take the i16 kernel.
    let mut whole = |bytes: &[u8]| match RowChecked::of(bytes, &layout) {
        None => run(Source::Narrow(bytes)),
        Some(rows) => run(Source::Rows(&rows)),
    };
    let one_by_one = dc.taps == [0] && dc.tap_len == dc.call.c;
    match kind {
        DenseInput::Pixels if one_by_one => run(Source::Checked(input.data())),
        DenseInput::Pixels => whole(input.data()),
        DenseInput::Padded => whole(&pad_images(&dc.call, input, zp as u8, dc.slack)),
    }
}

/// An input checked row by row (see [`Source::Rows`]).
struct RowChecked<'a> {
    bytes: &'a [u8],
    wide: Vec<i16>,
    /// Per input row, how many rows before it have a byte above 127 (one more entry).
    bad_before: Vec<u32>,
    /// Bytes per row.
    row: usize,
    /// Bytes a pixel reads from its base on.
    reach: usize,
}

impl<'a> RowChecked<'a> {
    /// `None` when every byte is ≤ 127.
    #[target_feature(enable = "avx2")]
    fn of(bytes: &'a [u8], layout: &Layout) -> Option<Self> {
        let row = layout.row_len();
        let mut bad_before = vec![0u32];
        let mut bad = 0;
        for r in bytes.chunks(row) {
            bad += u32::from(!fits_u7(r));
            bad_before.push(bad);
        }
        if bad == 0 {
            return None;
        }
        let mut wide = vec![0i16; bytes.len()];
        widen_bytes(bytes, &mut wide);
        Some(RowChecked {
            bytes,
            wide,
            bad_before,
            row,
            reach: layout.reach(),
        })
    }

    /// Whether every row that pixels at `first ..= last` (bases) read is ≤ 127.
    fn fits_u7(&self, first: usize, last: usize) -> bool {
        let (r0, r1) = (first / self.row, (last + self.reach - 1) / self.row);
        self.bad_before[r1 + 1] == self.bad_before[r0]
    }
}

/// A task's scratch: the tile last seen and whether its bytes are ≤ 127 (its panels follow one
/// another), and a [`Source::Checked`] tile's pixels as i16 when they are not.
#[derive(Default)]
struct Scratch {
    seen: Option<(usize, bool)>,
    wide: Vec<i16>,
}

/// Every unit of the convolution: [`PX`]-pixel tiles × single panels.
#[target_feature(enable = "avx2")]
fn run_tiles(
    a: &PackedWeightsS8,
    (prep, o): (&Prepared, OutRq),
    (x, layout): (Source, Layout),
    pixels: usize,
    macs: usize,
    out: &mut [u8],
) {
    let (m, quads) = (a.rows(), a.quads());
    let ptr = OutPtr(out.as_mut_ptr());
    let cp = layout.cp;
    let bytes = x.bytes();
    run_units(
        (PX, 1),
        a,
        (layout, bytes.len()),
        pixels,
        macs,
        |s: &mut Scratch, u: Unit| {
            let (p0, panel) = (u.tile * PX, u.group);
            let valid = PX.min(pixels - p0);
            let bases = layout.bases::<PX>(p0, u.first, valid);
            let channels = (m - panel * LANE_ROWS).min(LANE_ROWS);
            let two = channels > HALF;
            let u7 = match (x, s.seen) {
                (Source::Narrow(_), _) => true,
                (_, Some((at, u7))) if at == u.tile => u7,
                (Source::Rows(r), _) => r.fits_u7(bases[0], bases[valid - 1]),
                (Source::Checked(x), _) => {
                    // A stride-1 tile's pixels are one run of bytes.
                    let run = bases[valid - 1] - bases[0] == (valid - 1) * cp;
                    let u7 = match run {
                        true => fits_u7(&x[bases[0]..bases[0] + valid * cp]),
                        false => bases[..valid].iter().all(|&b| fits_u7(&x[b..b + cp])),
                    };
                    if !u7 {
                        s.wide.resize(PX * cp, 0);
                        for (i, &b) in bases[..valid].iter().enumerate() {
                            widen_bytes(&x[b..b + cp], &mut s.wide[i * cp..][..cp]);
                        }
                    }
                    u7
                }
            };
            s.seen = Some((u.tile, u7));
            // SAFETY (both arms): every pixel's taps lie inside the input (asserted by
            // `run_units`) or its widened copy, or inside the tile's `cp` values of `s.wide`; the
            // i8 panel holds quads · 64 bytes and the i16 one quads · 2 · 32 values.
            let acc: [[__m256i; 2]; PX] = if u7 {
                let xp = bases.map(|b| unsafe { bytes.as_ptr().add(b) });
                unsafe { tile_u8(xp, a.panel(panel).as_ptr(), layout, two) }
            } else {
                let xw = match x {
                    Source::Rows(r) => bases.map(|b| unsafe { r.wide.as_ptr().add(b) }),
                    _ => std::array::from_fn(|i| s.wide[i.min(valid - 1) * cp..].as_ptr()),
                };
                // Built on the first tile that needs them: most layers of a `reduce_range` model
                // never do.
                let w16 = prep.w16.get_or_init(|| weights_i16(a));
                let w = w16[panel * quads * 2 * LANE_ROWS * 2..].as_ptr();
                unsafe { tile_i16(xw, w, layout, two) }
            };
            let rq = [prep.rows[2 * panel], prep.rows[2 * panel + 1]];
            // SAFETY: each unit writes only its own pixels' channels of its panel, inside `out`
            // ([pixels, m]).
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
        },
    );
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
    let put = |i: usize, v: __m128i| {
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
    };
    // Two pixels per requantization, then the odd one.
    let pairs = acc.chunks_exact(2);
    let odd = pairs.remainder();
    for (k, pair) in pairs.enumerate() {
        let v = requant32(
            [pair[0][0], pair[0][1], pair[1][0], pair[1][1]],
            [rq[0], rq[1], rq[0], rq[1]],
            o,
        );
        put(2 * k, _mm256_castsi256_si128(v));
        put(2 * k + 1, _mm256_extracti128_si256::<1>(v));
    }
    if let [last] = odd {
        put(acc.len() - 1, requant16(*last, rq, o));
    }
}

/// The u8 × s8 accumulators of [`PX`] pixels × one panel (both halves when `two`, else the
/// first, the second left zero): `acc[i][h][r] = Σ_t Σ_q Σ_4 x_i[taps[t] + 4q..][..4] ·
/// panel[t·quads + q][8h + r][..4]`, exact for bytes ≤ 127.
///
/// # Safety
/// Each `x[i] + taps[t]` starts `4 · quads` readable bytes; `w` starts `taps · quads · 64`.
#[target_feature(enable = "avx2")]
unsafe fn tile_u8(x: [*const u8; PX], w: *const i8, l: Layout, two: bool) -> [[__m256i; 2]; PX] {
    // SAFETY: the caller's contract.
    unsafe {
        if two {
            tile_u8_h::<2>(x, w, l)
        } else {
            tile_u8_h::<1>(x, w, l).map(|[a]| [a, _mm256_setzero_si256()])
        }
    }
}

/// [`tile_u8`] on `H` halves.
///
/// # Safety
/// As [`tile_u8`].
#[target_feature(enable = "avx2")]
unsafe fn tile_u8_h<const H: usize>(
    x: [*const u8; PX],
    mut w: *const i8,
    l: Layout,
) -> [[__m256i; H]; PX] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); H]; PX];
    for &tap in l.taps {
        for q in 0..l.quads {
            // SAFETY: inside every pixel's tap and the panel (caller's contract).
            unsafe {
                let wv: [__m256i; H] =
                    std::array::from_fn(|h| _mm256_loadu_si256(w.add(h * 32) as *const __m256i));
                w = w.add(LANE_ROWS * 4);
                for (acc, &xi) in acc.iter_mut().zip(&x) {
                    let v = _mm256_set1_epi32((xi.add(tap + 4 * q) as *const i32).read_unaligned());
                    for (a, &wh) in acc.iter_mut().zip(&wv) {
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(v, wh), ones);
                        *a = _mm256_add_epi32(*a, p);
                    }
                }
            }
        }
    }
    acc
}

/// [`tile_u8`] for any bytes: per tap pair, the pixel's two values (widened to i16) broadcast
/// against the i16 weight pairs (`w` as [`WeightsI16`], `taps · quads · 2 · 32` values) in
/// `vpmaddwd`.
///
/// # Safety
/// Each `x[i] + taps[t]` starts `4 · quads` readable i16; `w` starts `taps · quads · 2 · 32`.
#[target_feature(enable = "avx2")]
unsafe fn tile_i16(x: [*const i16; PX], w: *const i16, l: Layout, two: bool) -> [[__m256i; 2]; PX] {
    // SAFETY: the caller's contract.
    unsafe {
        if two {
            tile_i16_h::<2>(x, w, l)
        } else {
            tile_i16_h::<1>(x, w, l).map(|[a]| [a, _mm256_setzero_si256()])
        }
    }
}

/// [`tile_i16`] on `H` halves.
///
/// # Safety
/// As [`tile_i16`].
#[target_feature(enable = "avx2")]
unsafe fn tile_i16_h<const H: usize>(
    x: [*const i16; PX],
    mut w: *const i16,
    l: Layout,
) -> [[__m256i; H]; PX] {
    let mut acc = [[_mm256_setzero_si256(); H]; PX];
    for &tap in l.taps {
        for t in 0..2 * l.quads {
            // SAFETY: inside every pixel's tap and the weights (caller's contract).
            unsafe {
                let wv: [__m256i; H] =
                    std::array::from_fn(|h| _mm256_loadu_si256(w.add(h * 16) as *const __m256i));
                w = w.add(LANE_ROWS * 2);
                for (acc, &xi) in acc.iter_mut().zip(&x) {
                    let v = _mm256_set1_epi32((xi.add(tap + 2 * t) as *const i32).read_unaligned());
                    for (a, &wh) in acc.iter_mut().zip(&wv) {
                        *a = _mm256_add_epi32(*a, _mm256_madd_epi16(v, wh));
                    }
                }
            }
        }
    }
    acc
}
