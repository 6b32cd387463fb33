//! What the AVX2 and AVX-512 channels-last dense convolutions share: implicit GEMMs
//! `y[p, o] = Σ_k x_p[k]·w[o, k]` over an NHWC input, with no im2col, each output pixel's
//! channels stored contiguously in an NHWC output (the layout the next layer reads).
//!
//! The input is NHWC with `cp = c` bytes per pixel, so kernel position `(ky, kx)` of output
//! pixel `(b, oy, ox)` is the `cp` bytes at `b·image + (oy·s + ky)·row + (ox·s + kx)·cp`
//! (MLAS's and oneDNN's direct NHWC convolution). A tap is one such position when `c` is a
//! multiple of 4, or, for the stems' 3 channels, a whole kernel row (its `kw` pixels are
//! contiguous); quad `j` of a tap is the dword `4j` on. The weights are
//! [`PackedWeightsS8`] panels of [`LANE_ROWS`] output channels in that tap order
//! ([`LaneTaps`]), with zero weights in the taps' padding:
//!
//! * unpadded convolutions over a multiple of 4 channels (1×1 at any stride) read the NHWC
//!   input itself ([`DenseInput::Pixels`]);
//! * others (3×3, the 7×7 stem) read a copy with `pad` zero-point pixels around each image,
//!   made from either memory format ([`pad_images`]).
//!
//! Inputs are raw `q_in`; each kernel takes `z_in · Σ w` off the bias, which is also why the
//! padding holds the zero-point (padded channels meet zero weights). The work is dealt as
//! units of a pixel tile × a group of panels ([`run_units`]).

use std::arch::x86_64::*;

use super::super::packed::{LANE_ROWS, PackedWeightsS8};
use super::super::{ConvCall, for_each_block, tasks_for, threads_for};
use crate::int8::buffer::Buffer;
use crate::int8::conv::{Int8Conv2d, LaneTaps};
use crate::int8::tensor::{MemoryFormat, QTensor};

/// How a dense kernel reads a convolution's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DenseInput {
    /// The NHWC input itself (unpadded, a multiple of 4 channels).
    Pixels,
    /// A zero-point-padded NHWC copy.
    Padded,
}

/// Whether the channels-last dense kernels run `op` on an input of `shape`, and how:
/// ungrouped, with symmetric weights (packed for them when the layer was prepared).
pub(super) fn input_kind(op: &Int8Conv2d, shape: &[usize]) -> Option<DenseInput> {
    op.lane_weights_s8()?;
    let direct = op.spec().padding == 0 && shape.len() == 4 && shape[1].is_multiple_of(4);
    Some(if direct {
        DenseInput::Pixels
    } else {
        DenseInput::Padded
    })
}

/// The input format the dense kernels want for `op` on `shape` (given [`input_kind`]): NHWC,
/// except for the padded copy of an image's 3 (or fewer) channels (the stems), which
/// [`pad_images`] makes from NCHW as cheaply (no conversion first). A layer over 58 channels
/// (ShuffleNetV2's) reads the NHWC its producer wrote: NCHW there cost two transposes.
pub(super) fn input_format(kind: DenseInput, shape: &[usize]) -> MemoryFormat {
    match kind {
        DenseInput::Padded if shape.len() == 4 && shape[1] < 4 => MemoryFormat::Contiguous,
        _ => MemoryFormat::ChannelsLast,
    }
}

/// A dense convolution call's geometry for the channels-last kernels: the call, its taps'
/// offsets in the (padded) NHWC input, and how many bytes a padded copy needs past its images.
pub(super) struct DenseCall {
    pub call: ConvCall,
    pub taps: Vec<usize>,
    /// Bytes per tap (a multiple of 4).
    pub tap_len: usize,
    /// A row tap's last dword runs up to 3 bytes past the row's pixels (onto zero weights):
    /// past the last image's end for its last pixel.
    pub slack: usize,
}

impl DenseCall {
    /// `None` when the kernel does not fit the input (nothing to compute).
    pub(super) fn of(op: &Int8Conv2d, input: &QTensor) -> Option<Self> {
        let call = ConvCall::of(op, input)?;
        let (lt, cp) = (LaneTaps::of(call.c, call.kh, call.kw), call.c);
        let pw = call.w + 2 * call.pad;
        let taps = if lt.rows {
            (0..call.kh).map(|ky| ky * pw * cp).collect()
        } else {
            (0..call.kh * call.kw)
                .map(|t| ((t / call.kw) * pw + t % call.kw) * cp)
                .collect()
        };
        let slack = if lt.rows { lt.len - call.kw * cp } else { 0 };
        Some(DenseCall {
            call,
            taps,
            tap_len: lt.len,
            slack,
        })
    }

    /// Output pixels.
    pub(super) fn pixels(&self) -> usize {
        self.call.n * self.call.oh * self.call.ow
    }

    /// Multiply-adds of the whole call for `m` output channels.
    pub(super) fn macs(&self, m: usize) -> usize {
        let c = &self.call;
        self.pixels() * m * c.c * c.kh * c.kw
    }

    /// Where the taps lie in the (padded, for [`DenseInput::Padded`]) NHWC input.
    pub(super) fn layout(&self) -> Layout<'_> {
        let c = &self.call;
        let (ph, pw, cp) = (c.h + 2 * c.pad, c.w + 2 * c.pad, c.c);
        Layout {
            taps: &self.taps,
            quads: self.tap_len / 4,
            cp,
            out_plane: c.oh * c.ow,
            ow: c.ow,
            stride: c.stride,
            row: pw * cp,
            image: ph * pw * cp,
        }
    }
}

/// Where pixel `p`'s taps lie in an NHWC buffer of `cp` values per pixel: its first tap at
/// [`Self::base`], tap `t` at `taps[t]` on, quad `j < quads` of a tap `4j` further.
#[derive(Clone, Copy)]
pub(super) struct Layout<'a> {
    pub taps: &'a [usize],
    pub quads: usize,
    pub cp: usize,
    out_plane: usize,
    ow: usize,
    stride: usize,
    row: usize,
    image: usize,
}

/// An output pixel: image, row, column.
#[derive(Clone, Copy)]
pub(super) struct Pixel {
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
    #[inline]
    pub(super) fn bases<const N: usize>(
        &self,
        p0: usize,
        first: Pixel,
        valid: usize,
    ) -> [usize; N] {
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

    /// One past the last value pixel `p` reads.
    pub(super) fn end(&self, p: usize) -> usize {
        self.base(p) + self.reach()
    }

    /// How many values a pixel reads from its base on.
    pub(super) fn reach(&self) -> usize {
        self.taps.iter().copied().max().unwrap_or(0) + 4 * self.quads
    }

    /// Values per (padded) input row.
    pub(super) fn row_len(&self) -> usize {
        self.row
    }
}

/// The images of `x` (either format) as NHWC with `call.pad` zero-point pixels around each
/// image and `slack` bytes after them (whatever the buffer held), in a buffer recycled within
/// the pass; its rows are written in parallel (the copy is a memory pass over the whole batch).
/// An NCHW stem's rows go through [`interleave3`]; both dense kernels run on AVX2 CPUs.
#[target_feature(enable = "avx2")]
pub(super) fn pad_images(call: &ConvCall, x: &QTensor, zp: u8, slack: usize) -> Buffer {
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
#[target_feature(enable = "avx2")]
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
        MemoryFormat::Contiguous if c == 3 => interleave3([line(0), line(1), line(2)], row),
        MemoryFormat::Contiguous => {
            for ci in 0..c {
                for (px, &v) in row.chunks_exact_mut(c).zip(line(ci)) {
                    px[ci] = v;
                }
            }
        }
    }
}

/// `out[3x + i] = lines[i][x]`, one pixel at a time (the tail of [`interleave3`]).
fn interleave3_scalar(lines: [&[u8]; 3], out: &mut [u8]) {
    for (x, px) in out.chunks_exact_mut(3).enumerate() {
        px.copy_from_slice(&[lines[0][x], lines[1][x], lines[2][x]]);
    }
}

/// `out[3x + i] = lines[i][x]`: three byte rows interleaved into 3-byte pixels, 16 pixels per
/// step (`punpck{l,h}bw` and `punpck{l,h}wd` into dwords, `pshufb` dropping every fourth byte,
/// four 16-byte stores 12 bytes apart, each overwriting the last one's 4 spare bytes), while
/// the step's spare bytes stay inside `out`; the rest one pixel at a time. The stems' padded
/// copy on AVX2 and AVX-512 CPUs alike.
#[target_feature(enable = "avx2")]
pub(super) fn interleave3(lines: [&[u8]; 3], out: &mut [u8]) {
    let w = out.len() / 3;
    assert!(lines.iter().all(|l| l.len() >= w));
    let pick = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    let mut x = 0;
    while 3 * (x + 16) + 4 <= out.len() {
        // SAFETY: x + 16 ≤ w: 16 bytes of every line; 3x + 52 ≤ out.len(): the stores.
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
            let dst = out.as_mut_ptr().add(3 * x);
            for (k, q) in quads.into_iter().enumerate() {
                _mm_storeu_si128(dst.add(12 * k) as *mut __m128i, _mm_shuffle_epi8(q, pick));
            }
        }
        x += 16;
    }
    interleave3_scalar(lines.map(|l| &l[x..]), &mut out[3 * x..]);
}

/// Multiply-adds per task of [`run_units`] (~65 µs of one thread at the `vpdpbusd` peak): at
/// batch 32, enough tasks (~100 for a ResNet-18 layer) that a thread which finishes early, or
/// lost its CPU for a while, leaves the rest to the others instead of waiting for them; few
/// enough that claiming them (a contended atomic each) costs nothing.
const TASK_MACS: usize = 1 << 25;

/// The smallest task of a smaller call (~20 µs of one thread): a batch-1 layer is still cut
/// into a few tasks per thread ([`tasks_for`]), so that when one vCPU of a shared machine
/// stalls, the others take over most of its share instead of waiting for half the layer.
const MIN_TASK_MACS: usize = 1 << 21;

/// One unit of work: pixel tile `tile` (of `PX` pixels, the first at `first`) × panel group
/// `group` (of the panels `PN` at a time).
#[derive(Clone, Copy)]
pub(super) struct Unit {
    pub tile: usize,
    pub first: Pixel,
    pub group: usize,
}

/// Deals the units (`px`-pixel tiles × groups of `pn` panels of `a`) of a call over `x_len`
/// input values to the threads in contiguous runs of about [`TASK_MACS`] (the same number for
/// each), which they claim one at a time, calling `f` on each with the task's own `S` (a
/// scratch buffer, say), made afresh per task. Panels run fastest when the
/// weights are the smaller operand (a thread's pixels stay in L1 while the weights stream
/// past), pixels when the weights are the larger (the deep layers, whose weights outgrow L2:
/// one group's panels then stay in L2 while every pixel passes).
pub(super) fn run_units<S: Default>(
    (px, pn): (usize, usize),
    a: &PackedWeightsS8,
    (layout, x_len): (Layout, usize),
    pixels: usize,
    macs: usize,
    f: impl Fn(&mut S, Unit) + Sync,
) {
    if pixels == 0 || a.rows() == 0 {
        return;
    }
    // Every dword any tile reads lies inside x (bases grow with the pixel index).
    assert!(layout.end(pixels - 1) <= x_len);
    assert_eq!(a.quads(), layout.taps.len() * layout.quads);
    assert_eq!(a.panel_rows(), LANE_ROWS);
    let panels = a.panels();
    let (tiles, groups) = (pixels.div_ceil(px), panels.div_ceil(pn));
    let units = tiles * groups;
    let threads = threads_for(macs).min(units);
    // A whole number of tasks per thread: with 3 tasks on 2 threads, one would run two.
    let tasks = (threads * (macs / (TASK_MACS * threads)).max(1))
        .max(tasks_for(macs, MIN_TASK_MACS))
        .min(units);
    let pixels_fastest = panels * a.quads() * LANE_ROWS * 4 > x_len;
    let run = |t: usize| {
        // The first pixel of the tile last seen, stepped along rather than divided out.
        let mut at: Option<(usize, Pixel)> = None;
        let mut scratch = S::default();
        let (lo, hi) = (units * t / tasks, units * (t + 1) / tasks);
        // The task's first unit divided out, the others stepped to (a division per unit
        // costs as much as a small-k tile's requantization).
        let (mut tile, mut group) = if pixels_fastest {
            (lo % tiles, lo / tiles)
        } else {
            (lo / groups, lo % groups)
        };
        for _ in lo..hi {
            let first = match at {
                Some((seen, c)) if seen == tile => c,
                Some((seen, c)) if seen + 1 == tile => layout.step(c, px),
                _ => layout.coords(tile * px),
            };
            at = Some((tile, first));
            f(&mut scratch, Unit { tile, first, group });
            if pixels_fastest {
                tile += 1;
                if tile == tiles {
                    (tile, group) = (0, group + 1);
                }
            } else {
                group += 1;
                if group == groups {
                    (tile, group) = (tile + 1, 0);
                }
            }
        }
    };
    super::super::team::parallel_for(tasks, run);
}
