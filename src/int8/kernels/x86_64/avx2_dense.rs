//! AVX2 dense convolutions into channels-last outputs: the implicit GEMMs of
//! [`super::dense_nhwc`] (1×1 at any stride, 3×3, the stems) on `vpmaddubsw`/`vpmaddwd`.
//!
//! A tile is [`PX`] (or 5, [`tile_pixels`]) pixels × one panel of 16 output channels (per tap quad, 16 rows × 4 taps =
//! two 32-byte halves of 8 channels). Per quad it loads the panel's two halves and broadcasts
//! each pixel's dword; `vpmaddubsw(dword, half)` multiplies u8 inputs by s8 weights and sums
//! them in pairs into i16, and `vpmaddwd` with ones sums the pairs into 8 i32 lanes, one per
//! output channel: 2·[`PX`] independent accumulators, started at their channels' int32 bias.
//! Each pixel's 16 channels are requantized ([`requant32`], two pixels at a time, lanes
//! holding their own channel's parameters) and stored contiguously.
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
use super::avx2::{OutRq, RowRq, lane_rows, out_rq, requant32};
use super::avx2_u8s8::fits_u7;
use super::dense_nhwc::{DenseCall, DenseInput, Layout, Unit, pad_images, run_units};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Pixels per tile: 12 accumulators, two weight halves, the broadcast and the ones, one more
/// than the 16 registers (the broadcast goes through the stack once a quad). 6 beat 4 by 10–30% on the
/// ResNet-18 3×3 shapes at batch 1 on a Zen 3, and 5 by 5–10% on the small-k pointwise ones
/// (`benches/int8_kernels.rs`).
const PX: usize = 6;

/// The tile of a call of `pixels` output pixels: [`PX`], or 5 where the last 6-pixel tile
/// would waste over 3% of the work on pixels past the end (a 7×7 layer at batch 1: 49 pixels
/// in 9 tiles of 6, 10 of 5).
fn tile_pixels(pixels: usize) -> usize {
    let waste = pixels.div_ceil(PX) * PX - pixels;
    if waste * 100 > 3 * pixels { 5 } else { PX }
}
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
    let mut run = |x: Source| {
        let rq = (&*prep, out_rq(rq));
        match tile_pixels(pixels) {
            PX => run_tiles::<PX>(a, rq, (x, layout), pixels, macs, out),
            _ => run_tiles::<5>(a, rq, (x, layout), pixels, macs, out),
        }
    };
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

/// Panels per unit: as many as keep a unit's weights within 16 KiB (L1, beside the tile's
/// pixels), so that a small-k layer sets a tile up, and checks its bytes, once for all of its
/// panels rather than once a panel.
fn panels_per_unit(a: &PackedWeightsS8) -> usize {
    (16384 / (a.quads() * LANE_ROWS * 4).max(1)).clamp(1, a.panels().max(1))
}

/// Every unit of the convolution: `P`-pixel tiles × groups of [`panels_per_unit`] panels.
#[target_feature(enable = "avx2")]
fn run_tiles<const P: usize>(
    a: &PackedWeightsS8,
    (prep, o): (&Prepared, OutRq),
    (x, layout): (Source, Layout),
    pixels: usize,
    macs: usize,
    out: &mut [u8],
) {
    let (m, quads, panels) = (a.rows(), a.quads(), a.panels());
    let pn = panels_per_unit(a);
    let ptr = OutPtr(out.as_mut_ptr());
    let cp = layout.cp;
    let bytes = x.bytes();
    run_units(
        (P, pn),
        a,
        (layout, bytes.len()),
        pixels,
        macs,
        |s: &mut Scratch, u: Unit| {
            let p0 = u.tile * P;
            let valid = P.min(pixels - p0);
            let bases = layout.bases::<P>(p0, u.first, valid);
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
                        s.wide.resize(P * cp, 0);
                        for (i, &b) in bases[..valid].iter().enumerate() {
                            widen_bytes(&x[b..b + cp], &mut s.wide[i * cp..][..cp]);
                        }
                    }
                    u7
                }
            };
            s.seen = Some((u.tile, u7));
            let xp = bases.map(|b| bytes.as_ptr().wrapping_add(b));
            let xw = match (u7, x) {
                (true, _) => [std::ptr::null(); P],
                (false, Source::Rows(r)) => bases.map(|b| r.wide.as_ptr().wrapping_add(b)),
                (false, _) => std::array::from_fn(|i| s.wide[i.min(valid - 1) * cp..].as_ptr()),
            };
            // Built on the first tile that needs them: most layers of a `reduce_range` model
            // never do.
            let w16 = (!u7).then(|| prep.w16.get_or_init(|| weights_i16(a)));
            for panel in u.group * pn..((u.group + 1) * pn).min(panels) {
                let channels = (m - panel * LANE_ROWS).min(LANE_ROWS);
                let t = TileOut {
                    out: ptr,
                    p0,
                    valid,
                    ch0: panel * LANE_ROWS,
                    channels,
                    m,
                };
                let rq = [prep.rows[2 * panel], prep.rows[2 * panel + 1]];
                let w8 = a.panel(panel).as_ptr();
                let w = w16.map(|w16| w16[panel * quads * 2 * LANE_ROWS * 2..].as_ptr());
                // One call of each `store` (LLVM inlines it then, keeping the accumulators in
                // registers).
                // SAFETY (every arm): every pixel's taps lie inside the input (asserted by
                // `run_units`) or its widened copy, or inside the tile's `cp` values of
                // `s.wide`; the i8 panel holds quads · 64 bytes and the i16 one quads · 2 · 32
                // values; the unit writes only its own pixels' channels of its panels, inside
                // `out` ([pixels, m]).
                unsafe {
                    if channels > HALF {
                        let acc = match w {
                            None => tile_u8::<2, P>(xp, w8, layout, rq),
                            Some(w) => tile_i16::<2, P>(xw, w, layout, rq),
                        };
                        t.store(acc, rq, o)
                    } else {
                        let rq = [rq[0]];
                        let acc = match w {
                            None => tile_u8::<1, P>(xp, w8, layout, rq),
                            Some(w) => tile_i16::<1, P>(xw, w, layout, rq),
                        };
                        t.store(acc, rq, o)
                    }
                }
            }
        },
    );
}

/// Where a tile's outputs of one panel go: pixels `p0 .. p0 + valid` × channels
/// `ch0 .. ch0 + channels` of the `[pixels, m]` output behind `out`.
#[derive(Clone, Copy)]
struct TileOut {
    out: OutPtr,
    p0: usize,
    valid: usize,
    ch0: usize,
    channels: usize,
    m: usize,
}

impl TileOut {
    /// Stores pixel `i`'s outputs, the first `W` (8 or 16) bytes of `v` when the panel has
    /// that many channels, else its `channels`; nothing past the last valid pixel.
    ///
    /// # Safety
    /// The tile's outputs lie inside the output, and no other thread writes them.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn put<const W: usize>(self, i: usize, v: __m128i) {
        if i >= self.valid {
            return;
        }
        // SAFETY: inside the output by the caller's contract.
        unsafe {
            let dst = self.out.at((self.p0 + i) * self.m + self.ch0);
            match (self.channels == W, W) {
                (true, 16) => _mm_storeu_si128(dst as *mut __m128i, v),
                (true, _) => _mm_storel_epi64(dst as *mut __m128i, v),
                (false, _) => {
                    let mut bytes = [0u8; 16];
                    _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, v);
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, self.channels);
                }
            }
        }
    }

    /// Requantizes and stores a panel of `H` halves (8 channels each): its `P · H` vectors,
    /// pixel by pixel, four at a time (two pixels of a full panel, four of a half one).
    ///
    /// # Safety
    /// As [`Self::put`].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store<const H: usize, const P: usize>(
        self,
        acc: [[__m256i; H]; P],
        rq: [RowRq; H],
        o: OutRq,
    ) {
        for k in (0..P * H).step_by(4) {
            let vector = |j: usize| {
                let i = (k + j).min(P * H - 1);
                acc[i / H][i % H]
            };
            let v = requant32(
                std::array::from_fn(vector),
                std::array::from_fn(|j| rq[(k + j) % H]),
                o,
            );
            let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let first = k / H;
            // SAFETY: the caller's contract.
            unsafe {
                if H == 2 {
                    self.put::<16>(first, lo);
                    self.put::<16>(first + 1, hi);
                } else {
                    self.put::<8>(first, lo);
                    self.put::<8>(first + 1, _mm_unpackhi_epi64(lo, lo));
                    self.put::<8>(first + 2, hi);
                    self.put::<8>(first + 3, _mm_unpackhi_epi64(hi, hi));
                }
            }
        }
    }
}

/// The u8 × s8 accumulators of `P` pixels × `H` halves of a panel, started at each half's
/// `bias_i32`: `acc[i][h][r] = bias + Σ_t Σ_q Σ_4 x_i[taps[t] + 4q..][..4] ·
/// panel[t·quads + q][8h + r][..4]`, exact for bytes ≤ 127.
///
/// # Safety
/// Each `x[i] + taps[t]` starts `4 · quads` readable bytes; `w` starts `taps · quads · 64`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile_u8<const H: usize, const P: usize>(
    x: [*const u8; P],
    mut w: *const i8,
    l: Layout,
    rq: [RowRq; H],
) -> [[__m256i; H]; P] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [rq.map(|r| r.bias_i32); P];
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
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile_i16<const H: usize, const P: usize>(
    x: [*const i16; P],
    mut w: *const i16,
    l: Layout,
    rq: [RowRq; H],
) -> [[__m256i; H]; P] {
    let mut acc = [rq.map(|r| r.bias_i32); P];
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
