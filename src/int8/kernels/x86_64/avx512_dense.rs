//! AVX-512 VNNI dense convolutions into channels-last outputs: implicit GEMMs
//! `y[p, o] = Σ_k x_p[k]·w[o, k]` over an NHWC input, with no im2col.
//!
//! A tile is 8 output pixels × 2 panels of 16 output channels ([`NARROW`]), or 6 × 4 for
//! layers of a multiple of 64 channels ([`WIDE`]: fewer loads per `vpdpbusd`). Per tap quad
//! it loads one weight vector per panel (four taps of 16 channels, prepacked once as
//! `[k/4][16][4]` panels: [`PackedWeightsS8`] with [`LANE_ROWS`] rows, in the tap order of
//! [`LaneTaps`], zero weights in the taps' padding) and broadcasts one dword of four input
//! bytes per pixel, which `vpdpbusd` multiplies against each: 16 or 24 independent
//! accumulators, started at the channels' int32 bias. Each accumulator is one pixel's 16
//! output channels; four at a time are requantized per lane ([`requant64`]) and each pixel's
//! bytes are stored contiguously in the NHWC output — the layout the next layer reads.
//!
//! The input is NHWC with `cp = c` bytes per pixel, so kernel position `(ky, kx)` of output
//! pixel `(b, oy, ox)` is the `cp` bytes at `b·image + (oy·s + ky)·row + (ox·s + kx)·cp`
//! (MLAS's and oneDNN's direct NHWC convolution). A tap is one such position when `c` is a
//! multiple of 4, or, for the stems' 3 channels, a whole kernel row (its `kw` pixels are
//! contiguous); quad `j` of a tap is the dword `4j` on:
//!
//! * unpadded convolutions over a multiple of 4 channels (1×1 at any stride) read the NHWC
//!   input itself;
//! * others (3×3, the 7×7 stem) read a copy with `pad` zero-point pixels around each image,
//!   made from either memory format.
//!
//! Inputs are raw `q_in`; `z_in · Σ w` comes off the bias ([`super::avx512_lanes`]), which is
//! also why the padding holds the zero-point (padded channels meet zero weights). Tiles at the
//! edges recompute their last pixel or panel instead of branching, and store only what is
//! theirs.

use std::arch::x86_64::*;

use super::super::gemm::OutPtr;
use super::super::packed::{LANE_ROWS, PackedWeightsS8};
use super::super::{ConvCall, for_each_block, threads_for};
use super::avx512_lanes::{LANES, LaneOut, LaneRq, lane_groups, lane_mask, lane_out, requant64};
use crate::int8::buffer::Buffer;
use crate::int8::conv::{Int8Conv2d, LaneTaps};
use crate::int8::requant::Requant;
use crate::int8::tensor::{MemoryFormat, QTensor};

/// Tile shapes (pixels, panels of 16 output channels): 16 or 24 accumulators, with room for
/// the weight vectors and the broadcast in the 32 registers.
const NARROW: (usize, usize) = (8, 2);
const WIDE: (usize, usize) = (6, 4);

/// How the kernel reads a convolution's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DenseInput {
    /// The NHWC input itself (unpadded, a multiple of 4 channels).
    Pixels,
    /// A zero-point-padded NHWC copy.
    Padded,
}

/// Whether this kernel runs `op` on an input of `shape`, and how: ungrouped, with symmetric
/// weights (packed for it when the layer was prepared).
pub(super) fn input_kind(op: &Int8Conv2d, shape: &[usize]) -> Option<DenseInput> {
    op.lane_weights_s8()?;
    let direct = op.spec().padding == 0 && shape.len() == 4 && shape[1].is_multiple_of(4);
    Some(if direct {
        DenseInput::Pixels
    } else {
        DenseInput::Padded
    })
}

/// The input format this kernel wants for `op` on `shape` (given [`input_kind`]): NHWC, except
/// for a padded copy of channels that are not a multiple of 4 (the stems' 3), which it makes
/// from NCHW as cheaply (no conversion first).
pub(super) fn input_format(kind: DenseInput, shape: &[usize]) -> MemoryFormat {
    match kind {
        DenseInput::Padded if shape.len() == 4 && !shape[1].is_multiple_of(4) => {
            MemoryFormat::Contiguous
        }
        _ => MemoryFormat::ChannelsLast,
    }
}

/// Where pixel `p`'s taps lie in an NHWC buffer of `cp` bytes per pixel: its first tap at
/// [`Self::base`], tap `t` at `taps[t]` on, quad `j < quads` of a tap `4j` further.
#[derive(Clone, Copy)]
struct Layout<'a> {
    taps: &'a [usize],
    quads: usize,
    cp: usize,
    out_plane: usize,
    ow: usize,
    stride: usize,
    row: usize,
    image: usize,
}

/// An output pixel: image, row, column.
#[derive(Clone, Copy)]
struct Pixel {
    b: usize,
    y: usize,
    x: usize,
}

impl Layout<'_> {
    fn base(&self, p: usize) -> usize {
        if self.image == self.out_plane * self.cp {
            // Output pixels are input pixels (1×1, stride 1, unpadded): no divisions, which
            // would cost as much as the few quads of a small-k pointwise layer.
            return p * self.cp;
        }
        let (b, q) = (p / self.out_plane, p % self.out_plane);
        b * self.image
            + (q / self.ow) * self.stride * self.row
            + (q % self.ow) * self.stride * self.cp
    }

    /// Output pixel `p` as (image, row, column).
    fn coords(&self, p: usize) -> Pixel {
        let (b, q) = (p / self.out_plane, p % self.out_plane);
        Pixel {
            b,
            y: q / self.ow,
            x: q % self.ow,
        }
    }

    /// `c` moved `n` output pixels on (row-major through the images).
    fn step(&self, mut c: Pixel, n: usize) -> Pixel {
        c.x += n;
        while c.x >= self.ow {
            c.x -= self.ow;
            c.y += 1;
            if c.y * self.ow == self.out_plane {
                c.y = 0;
                c.b += 1;
            }
        }
        c
    }

    /// [`Self::base`] of the `N` pixels from `first` (pixel `p0`), repeating the last valid
    /// one (`valid − 1` on) past it, with no divisions: a tile's setup is on its critical
    /// path, and two dependent divisions cost tens of cycles of a few hundred.
    fn bases<const N: usize>(&self, p0: usize, first: Pixel, valid: usize) -> [usize; N] {
        let last = valid - 1;
        if self.image == self.out_plane * self.cp {
            return std::array::from_fn(|i| (p0 + i.min(last)) * self.cp);
        }
        let mut c = first;
        let mut out = [0; N];
        for o in out.iter_mut().take(valid) {
            *o = c.b * self.image + c.y * self.stride * self.row + c.x * self.stride * self.cp;
            c = self.step(c, 1);
        }
        for i in valid..N {
            out[i] = out[last];
        }
        out
    }

    /// One past the last byte pixel `p` reads.
    fn end(&self, p: usize) -> usize {
        self.base(p) + self.taps.iter().copied().max().unwrap_or(0) + 4 * self.quads
    }
}

/// The convolution of `input` (in [`input_format`]; `kind` from [`input_kind`]) into the
/// channels-last `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
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
    let Some(call) = ConvCall::of(op, input) else {
        return;
    };
    debug_assert_eq!(a.panel_rows(), LANE_ROWS);
    let (m, zp) = (a.rows(), input.qparams().zero_point);
    let pixels = call.n * call.oh * call.ow;
    assert_eq!(out.len(), pixels * m, "output is [pixels, m]");
    let lanes = op.kernel_cache().get_or_build(input.qparams(), || {
        lane_groups(rq, m, zp, |o| a.row_sums()[o])
    });
    let o = lane_out(rq);
    let macs = pixels * m * call.c * call.kh * call.kw;
    let (lt, cp) = (LaneTaps::of(call.c, call.kh, call.kw), call.c);
    debug_assert_eq!(a.quads(), lt.count * lt.len / 4);
    let (ph, pw) = (call.h + 2 * call.pad, call.w + 2 * call.pad);
    let taps: Vec<usize> = if lt.rows {
        (0..call.kh).map(|ky| ky * pw * cp).collect()
    } else {
        (0..call.kh * call.kw)
            .map(|t| ((t / call.kw) * pw + t % call.kw) * cp)
            .collect()
    };
    let layout = Layout {
        taps: &taps,
        quads: lt.len / 4,
        cp,
        out_plane: call.oh * call.ow,
        ow: call.ow,
        stride: call.stride,
        row: pw * cp,
        image: ph * pw * cp,
    };
    let rq = (&lanes[..], o);
    match kind {
        DenseInput::Pixels => run_tiles(a, rq, (input.data(), layout), pixels, macs, out),
        DenseInput::Padded => {
            // A row tap's last dword runs up to 3 bytes past the row's pixels (onto zero
            // weights): past the last image's end for its last pixel.
            let slack = if lt.rows { lt.len - call.kw * cp } else { 0 };
            let padded = pad_images(&call, input, zp as u8, slack);
            run_tiles(a, rq, (&padded, layout), pixels, macs, out)
        }
    }
}

/// The images of `x` (either format) as NHWC with `call.pad` zero-point pixels around each
/// image and `slack` bytes after them (whatever the buffer held), in a buffer recycled within
/// the pass; its rows are written in parallel (the copy is a memory pass over the whole batch).
fn pad_images(call: &ConvCall, x: &QTensor, zp: u8, slack: usize) -> Buffer {
    let (ph, pw, c) = (call.h + 2 * call.pad, call.w + 2 * call.pad, call.c);
    let mut dst = Buffer::new(call.n * ph * pw * c + slack);
    // About 64 KiB per task.
    let rows = (65536 / (pw * c)).max(1);
    let images = call.n * ph * pw * c;
    for_each_block(&mut dst[..images], rows * pw * c, |i, chunk| {
        for (r, row) in chunk.chunks_exact_mut(pw * c).enumerate() {
            let r = i * rows + r;
            pad_row(call, x, zp, (r / ph, r % ph), row);
        }
    });
    dst
}

/// Row `y` (of `ph`) of padded image `b` (see [`pad_images`]).
fn pad_row(call: &ConvCall, x: &QTensor, zp: u8, (b, y): (usize, usize), out: &mut [u8]) {
    let (c, h, w, pad) = (call.c, call.h, call.w, call.pad);
    if y < pad || y >= pad + h {
        out.fill(zp);
        return;
    }
    let y = y - pad;
    out[..pad * c].fill(zp);
    out[(pad + w) * c..].fill(zp);
    let row = &mut out[pad * c..][..w * c];
    let src = &x.data()[b * c * h * w..][..c * h * w];
    let line = |ci: usize| &src[(ci * h + y) * w..][..w];
    match x.format() {
        MemoryFormat::ChannelsLast => row.copy_from_slice(&src[y * w * c..][..w * c]),
        // The stems (3 channels): 16 pixels at a time.
        // SAFETY: this kernel runs only on CPUs with AVX-512 (F, BW, VL).
        MemoryFormat::Contiguous if c == 3 => unsafe {
            interleave3([line(0), line(1), line(2)], row)
        },
        MemoryFormat::Contiguous => {
            for ci in 0..c {
                for (px, &v) in row.chunks_exact_mut(c).zip(line(ci)) {
                    px[ci] = v;
                }
            }
        }
    }
}

/// Runs the convolution on the tile shape that suits its output channels: [`WIDE`] when they
/// fill panels of four (64 channels: ResNet's, fewer loads per `vpdpbusd`), else [`NARROW`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn run_tiles(
    a: &PackedWeightsS8,
    rq: (&[LaneRq], LaneOut),
    input: (&[u8], Layout),
    pixels: usize,
    macs: usize,
    out: &mut [u8],
) {
    if a.rows().is_multiple_of(WIDE.1 * LANES) {
        run_shape::<{ WIDE.0 }, { WIDE.1 }>(a, rq, input, pixels, macs, out)
    } else {
        run_shape::<{ NARROW.0 }, { NARROW.1 }>(a, rq, input, pixels, macs, out)
    }
}

/// Multiply-adds per task of [`run_shape`] (~65 µs of one thread at the `vpdpbusd` peak): at
/// batch 32, enough tasks (~100 for a ResNet-18 layer) that a thread which finishes early, or
/// lost its CPU for a while, leaves the rest to the others instead of waiting for them; few
/// enough that claiming them (a contended atomic each) costs nothing. At batch 1 a layer is
/// one task per thread, as the threads would split it evenly anyway.
const TASK_MACS: usize = 1 << 25;

/// Deals the tiles (`PX`-pixel tiles × groups of `PN` panels) to the threads in contiguous
/// runs of about [`TASK_MACS`] (the same number for each), which they claim one at a time. Panels run fastest when the
/// weights are the smaller operand (a thread's pixels stay in L1 while the weights stream
/// past), pixels when the weights are the larger (the deep layers, whose weights outgrow L2:
/// one group's panels then stay in L2 while every pixel passes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn run_shape<const PX: usize, const PN: usize>(
    a: &PackedWeightsS8,
    rq: (&[LaneRq], LaneOut),
    (x, layout): (&[u8], Layout),
    pixels: usize,
    macs: usize,
    out: &mut [u8],
) {
    // Every dword any tile reads lies inside x (bases grow with the pixel index).
    assert!(layout.end(pixels - 1) <= x.len());
    assert_eq!(a.quads(), layout.taps.len() * layout.quads);
    let panels = a.panels();
    let (tiles, groups) = (pixels.div_ceil(PX), panels.div_ceil(PN));
    let units = tiles * groups;
    let threads = threads_for(macs).min(units);
    // A whole number of tasks per thread: with 3 tasks on 2 threads, one would run two.
    let tasks = (threads * (macs / (TASK_MACS * threads)).max(1)).min(units);
    let pixels_fastest = panels * a.quads() * LANES * 4 > x.len();
    let group_data: Vec<Group<PN>> = (0..groups).map(|g| Group::of(a, rq.0, g)).collect();
    let ptr = OutPtr(out.as_mut_ptr());
    let run = |t: usize| {
        // The first pixel of the tile last seen, stepped along rather than divided out.
        let mut at: Option<(usize, Pixel)> = None;
        for u in units * t / tasks..units * (t + 1) / tasks {
            let (tile, group) = if pixels_fastest {
                (u % tiles, u / tiles)
            } else {
                (u / groups, u % groups)
            };
            let first = match at {
                Some((seen, c)) if seen == tile => c,
                Some((seen, c)) if seen + 1 == tile => layout.step(c, PX),
                _ => layout.coords(tile * PX),
            };
            at = Some((tile, first));
            let unit = (tile, first, &group_data[group]);
            // SAFETY: each unit writes only its own pixels' channels of its panels, inside
            // `out` ([pixels, m]); every read lies inside x (asserted above).
            unsafe { tile_unit::<PX, PN>(a.rows(), rq.1, (x, layout), pixels, unit, ptr) };
        }
    };
    super::super::team::parallel_for(tasks, run);
}

/// What a tile needs of its group of `PN` panels (the last panel again past the last), worked
/// out once per call: the tiles' setup is on their critical path.
#[derive(Clone, Copy)]
struct Group<'a, const PN: usize> {
    /// The first panel.
    g0: usize,
    w: [&'a [i8]; PN],
    rq: [&'a LaneRq; PN],
    /// A pixel's bytes of the group's tiles: each valid panel's channels below m.
    mask: u64,
}

impl<'a, const PN: usize> Group<'a, PN> {
    fn of(a: &'a PackedWeightsS8, lanes: &'a [LaneRq], group: usize) -> Self {
        let g0 = group * PN;
        let valid = PN.min(a.panels() - g0);
        let panel = |j: usize| g0 + j.min(valid - 1);
        let mask = (0..valid).fold(0u64, |mask, j| {
            mask | (lane_mask(a.rows() - (g0 + j) * LANES) as u64) << (j * LANES)
        });
        Group {
            g0,
            w: std::array::from_fn(|j| a.panel(panel(j))),
            rq: std::array::from_fn(|j| &lanes[panel(j)]),
            mask,
        }
    }
}

/// Pixel tile `tile` (its first pixel at `first`) × a panel group, requantized and stored
/// into the `[pixels, m]` output behind `out`.
///
/// # Safety
/// `out` points at `pixels · m` writable bytes, and no other thread writes this unit's; every
/// byte `layout` places for pixels below `pixels` lies inside `x`; `first` is pixel
/// `tile · PX`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_unit<const PX: usize, const PN: usize>(
    m: usize,
    o: LaneOut,
    (x, layout): (&[u8], Layout),
    pixels: usize,
    (tile, first, group): (usize, Pixel, &Group<PN>),
    out: OutPtr,
) {
    const {
        assert!(
            PN == 2 || PN == 4,
            "a pixel's outputs are half or all of 64 bytes"
        )
    };
    let p0 = tile * PX;
    let valid_pixels = PX.min(pixels - p0);
    // Past the edges, the last pixel and panel again (computed, never stored).
    // SAFETY: the pixels are below `pixels`, so their bases lie inside x (caller's contract).
    let xp = layout
        .bases::<PX>(p0, first, valid_pixels)
        .map(|b| unsafe { x.as_ptr().add(b) });
    let Group { g0, w, rq, mask } = *group;
    let w = w.map(<[i8]>::as_ptr);
    // SAFETY: the taps are inside x by the caller's contract; every panel holds
    // `taps · quads` quads (asserted by `run_shape`).
    let acc = unsafe { tile_acc(xp, w, rq.map(LaneRq::acc_init), layout.taps, layout.quads) };
    // Four accumulators per requantization: two pixels' two panels, or one pixel's four.
    let per = 4 / PN;
    for i in (0..valid_pixels).step_by(per) {
        let v = requant64(
            std::array::from_fn(|k| acc[i + k / PN][k % PN]),
            std::array::from_fn(|k| rq[k % PN]),
            o,
        );
        // SAFETY (both arms): the mask stores only this tile's channels below m of pixel
        // p0 + i (+ 1), inside `out` by the caller's contract.
        let dst = |k: usize| unsafe { out.at((p0 + i + k) * m + g0 * LANES) } as *mut i8;
        if PN == 4 {
            unsafe { _mm512_mask_storeu_epi8(dst(0), mask, v) };
        } else {
            let halves = [_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)];
            for (k, half) in halves.into_iter().enumerate().take(valid_pixels - i) {
                unsafe { _mm256_mask_storeu_epi8(dst(k), mask as u32, half) };
            }
        }
    }
}

/// The `PX × PN` accumulators from `init`: `acc[i][j][lane] = init[j][lane] +
/// Σ_t Σ_q x_i[taps[t] + 4q] · panel_j[t·quads + q][lane]` (dwords of 4 bytes).
///
/// # Safety
/// Each `x[i] + taps[t]` starts `4 · quads` readable bytes; each `w[j]` points at
/// `taps.len() · quads · 64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_acc<const PX: usize, const PN: usize>(
    x: [*const u8; PX],
    mut w: [*const i8; PN],
    init: [__m512i; PN],
    taps: &[usize],
    quads: usize,
) -> [[__m512i; PN]; PX] {
    let mut acc = [init; PX];
    for &tap in taps {
        for j in 0..quads {
            let at = tap + 4 * j;
            // SAFETY: inside every pixel's tap and every panel by the caller's contract.
            unsafe {
                let wv: [__m512i; PN] =
                    std::array::from_fn(|j| _mm512_loadu_si512(w[j] as *const __m512i));
                w = w.map(|p| p.add(LANES * 4));
                for (acc, &xi) in acc.iter_mut().zip(&x) {
                    let v = _mm512_set1_epi32((xi.add(at) as *const i32).read_unaligned());
                    for (a, &wj) in acc.iter_mut().zip(&wv) {
                        *a = _mm512_dpbusd_epi32(*a, v, wj);
                    }
                }
            }
        }
    }
    acc
}

/// `out[3x + i] = lines[i][x]`: three byte rows interleaved into 3-byte pixels, 16 pixels per
/// step (`punpck{l,h}bw` and `punpck{l,h}wd` into dwords, `pshufb` dropping every fourth byte,
/// 12-byte masked stores), the tail one pixel at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn interleave3(lines: [&[u8]; 3], out: &mut [u8]) {
    let w = out.len() / 3;
    assert!(lines.iter().all(|l| l.len() >= w));
    let pick = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    let mut x = 0;
    while x + 16 <= w {
        // SAFETY: x + 16 ≤ w: 16 bytes of every line and 48 of `out` from 3x are in bounds.
        unsafe {
            let load = |i: usize| _mm_loadu_si128(lines[i].as_ptr().add(x) as *const __m128i);
            let (a, b, c) = (load(0), load(1), load(2));
            let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
            let (cc_lo, cc_hi) = (_mm_unpacklo_epi8(c, c), _mm_unpackhi_epi8(c, c));
            let quads = [
                _mm_unpacklo_epi16(ab_lo, cc_lo),
                _mm_unpackhi_epi16(ab_lo, cc_lo),
                _mm_unpacklo_epi16(ab_hi, cc_hi),
                _mm_unpackhi_epi16(ab_hi, cc_hi),
            ];
            let dst = out.as_mut_ptr().add(3 * x) as *mut i8;
            for (k, q) in quads.into_iter().enumerate() {
                _mm_mask_storeu_epi8(dst.add(12 * k), 0x0fff, _mm_shuffle_epi8(q, pick));
            }
        }
        x += 16;
    }
    for (x, px) in out.chunks_exact_mut(3).enumerate().skip(x) {
        px.copy_from_slice(&[lines[0][x], lines[1][x], lines[2][x]]);
    }
}
