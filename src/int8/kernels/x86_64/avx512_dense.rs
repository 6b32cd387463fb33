//! AVX-512 VNNI dense convolutions into channels-last outputs: GEMMs
//! `y[p, o] = Σ_k x_p[k]·w[o, k]` whose input operand needs no per-call packing.
//!
//! A tile is [`PIXELS`] output pixels × [`PANELS`] panels of 16 output channels. Per tap quad
//! it loads two weight vectors (four taps of 16 channels, prepacked once as `[k/4][16][4]`
//! panels: [`PackedWeightsS8`] with [`LANE_ROWS`] rows) and broadcasts one dword of four
//! input bytes per pixel, which `vpdpbusd` multiplies against both: sixteen independent
//! accumulators, started at the channels' int32 bias. Each accumulator is one pixel's 16
//! output channels; two pixels' four are requantized per lane together ([`requant64`]) and
//! each pixel's 32 bytes are stored contiguously in the NHWC output — the layout the next
//! layer reads. Where a pixel's dwords come from:
//!
//! * 1×1, stride 1, no padding, on NHWC: a pixel's channels are contiguous, so quad `q` is
//!   the dword at `x + p·c + 4q`.
//! * other kernels up to 4 wide (the 3×3 stride-2 stem), on NCHW: the image is copied once
//!   into a zero-point-padded buffer, and the taps of one channel and kernel row are the dword
//!   at `(ch, y·s + ky, x·s)`; the weights are packed with each kernel row padded to four
//!   taps (the fourth weight 0), so no im2col is built.
//!
//! Inputs are raw `q_in`; `z_in · Σ w` comes off the bias ([`super::avx512_lanes`]), which is
//! also why the padding holds the zero-point. Tiles at the edges recompute their last pixel or
//! panel instead of branching, and store only what is theirs.

use std::arch::x86_64::*;

use super::super::gemm::OutPtr;
use super::super::packed::{LANE_ROWS, PackedWeightsS8};
use super::super::{ConvCall, threads_for};
use super::avx512_lanes::{LANES, LaneOut, LaneRq, lane_groups, lane_mask, lane_out, requant64};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Pixels per tile.
const PIXELS: usize = 8;
/// Panels of 16 output channels per tile.
const PANELS: usize = 2;

/// How the kernel reads a convolution's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DenseInput {
    /// 1×1 on an NHWC input.
    Pixels,
    /// Kernel rows of up to 4 taps from a padded copy of the NCHW input.
    Windows,
}

/// Whether this kernel runs `op` on an input of `shape`, and how: ungrouped, with symmetric
/// weights (packed for it when the layer was prepared), and either a 1×1 stride-1 unpadded
/// convolution over a multiple of 4 channels (so a pixel's last quad does not read into the
/// next pixel) or a kernel at most 4 wide.
pub(super) fn input_kind(op: &Int8Conv2d, shape: &[usize]) -> Option<DenseInput> {
    let (spec, [kh, kw]) = (op.spec(), op.kernel_size());
    op.lane_weights_s8()?;
    if [kh, kw] == [1, 1] {
        let pixels =
            spec.stride == 1 && spec.padding == 0 && shape.len() == 4 && shape[1].is_multiple_of(4);
        pixels.then_some(DenseInput::Pixels)
    } else {
        (kw <= 4).then_some(DenseInput::Windows)
    }
}

/// Where pixel `p`'s dwords lie: `base(p) + quad_offset(q)`.
#[derive(Clone, Copy)]
enum Layout<'a> {
    /// NHWC pixels of `c` channels: `p·c + 4q`.
    Pixels { c: usize },
    /// Windows of a padded NCHW batch (`image` bytes per image, rows `pw` wide): pixel `p`
    /// of an `oh × ow` output starts at `(p / (oh·ow))·image + (oy·s)·pw + ox·s`, quad `q`
    /// is `offsets[q]` on (channel and kernel row).
    Windows {
        offsets: &'a [usize],
        out_plane: usize,
        ow: usize,
        stride: usize,
        pw: usize,
        image: usize,
    },
}

impl Layout<'_> {
    fn base(&self, p: usize) -> usize {
        match *self {
            Layout::Pixels { c } => p * c,
            Layout::Windows {
                out_plane,
                ow,
                stride,
                pw,
                image,
                ..
            } => {
                let (b, q) = (p / out_plane, p % out_plane);
                b * image + (q / ow) * stride * pw + (q % ow) * stride
            }
        }
    }

    fn last_quad_offset(&self, quads: usize) -> usize {
        match *self {
            Layout::Pixels { .. } => 4 * (quads - 1),
            Layout::Windows { offsets, .. } => offsets.iter().copied().max().unwrap_or(0),
        }
    }
}

/// The convolution of `input` (NHWC for [`DenseInput::Pixels`], NCHW for
/// [`DenseInput::Windows`]; `kind` from [`input_kind`]) into the channels-last `out`.
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
    match kind {
        DenseInput::Pixels => {
            let layout = Layout::Pixels { c: call.c };
            run_tiles(
                a,
                (&lanes, o),
                (input.data(), layout),
                pixels,
                macs,
                out,
                |q| 4 * q,
            )
        }
        DenseInput::Windows => {
            let (padded, pw, image) = pad_images(&call, input.data(), zp as u8);
            let ph = call.h + 2 * call.pad;
            let offsets: Vec<usize> = (0..a.quads())
                .map(|q| (q / call.kh) * ph * pw + (q % call.kh) * pw)
                .collect();
            let layout = Layout::Windows {
                offsets: &offsets,
                out_plane: call.oh * call.ow,
                ow: call.ow,
                stride: call.stride,
                pw,
                image,
            };
            run_tiles(a, (&lanes, o), (&padded, layout), pixels, macs, out, |q| {
                offsets[q]
            })
        }
    }
}

/// The NCHW images of `x` with `call.pad` zero-point pixels around each plane, plus 4 bytes of
/// slack (a window's last dword may reach one byte past its row); with the padded row width
/// and image length.
fn pad_images(call: &ConvCall, x: &[u8], zp: u8) -> (Vec<u8>, usize, usize) {
    let (ph, pw) = (call.h + 2 * call.pad, call.w + 2 * call.pad);
    let image = call.c * ph * pw;
    let mut padded = vec![zp; call.n * image + 4];
    for (src, dst) in x
        .chunks_exact(call.w)
        .zip((0..call.n * call.c).flat_map(|plane| {
            (0..call.h).map(move |y| plane * ph * pw + (y + call.pad) * pw + call.pad)
        }))
    {
        padded[dst..][..call.w].copy_from_slice(src);
    }
    (padded, pw, image)
}

/// Deals the tiles (pixel tiles × panel pairs, panels fastest so that a thread's pixels stay
/// in L1 while the weights stream past) to the threads in equal contiguous runs: the 7×7
/// layers have more panels than pixel tiles.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn run_tiles(
    a: &PackedWeightsS8,
    rq: (&[LaneRq], LaneOut),
    (x, layout): (&[u8], Layout),
    pixels: usize,
    macs: usize,
    out: &mut [u8],
    quad_offset: impl Fn(usize) -> usize + Sync,
) {
    // Every dword any tile reads lies inside x (bases grow with the pixel index).
    assert!(layout.base(pixels - 1) + layout.last_quad_offset(a.quads()) + 4 <= x.len());
    let (tiles, pairs) = (pixels.div_ceil(PIXELS), a.panels().div_ceil(PANELS));
    let units = tiles * pairs;
    let threads = threads_for(macs).min(units);
    let ptr = OutPtr(out.as_mut_ptr());
    let run = |t: usize| {
        for u in units * t / threads..units * (t + 1) / threads {
            // SAFETY: each unit writes only its own pixels' channels of its panels, inside
            // `out` ([pixels, m]); every read lies inside x (asserted above).
            unsafe {
                tile_unit(
                    a,
                    rq,
                    (x, layout, &quad_offset),
                    pixels,
                    (u / pairs, u % pairs),
                    ptr,
                )
            };
        }
    };
    super::super::team::parallel_for(threads, run);
}

/// Pixel tile `tile` × panel pair `pair`, requantized and stored into the `[pixels, m]`
/// output behind `out`.
///
/// # Safety
/// `out` points at `pixels · m` writable bytes, and no other thread writes this unit's; every
/// dword `layout` places for pixels below `pixels` lies inside `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_unit(
    a: &PackedWeightsS8,
    (lanes, o): (&[LaneRq], LaneOut),
    (x, layout, quad_offset): (&[u8], Layout, &impl Fn(usize) -> usize),
    pixels: usize,
    (tile, pair): (usize, usize),
    out: OutPtr,
) {
    let (m, panels, quads) = (a.rows(), a.panels(), a.quads());
    let p0 = tile * PIXELS;
    let valid_pixels = PIXELS.min(pixels - p0);
    let g0 = pair * PANELS;
    let valid_panels = PANELS.min(panels - g0);
    // Past the edges, the last pixel and panel again (computed, never stored).
    let mut xp = [x.as_ptr(); PIXELS];
    for (i, p) in xp.iter_mut().enumerate() {
        // SAFETY: the pixel is below `pixels`, so its base lies inside x (caller's contract).
        *p = unsafe { p.add(layout.base(p0 + i.min(valid_pixels - 1))) };
    }
    let w0 = a.panel(g0).as_ptr();
    let w1 = a.panel(g0 + valid_panels - 1).as_ptr();
    let rq = [&lanes[g0], &lanes[g0 + valid_panels - 1]];
    // SAFETY: the dwords are inside x by the caller's contract; every panel holds `quads` quads.
    let acc = unsafe { tile_acc(xp, [w0, w1], rq.map(LaneRq::acc_init), quads, quad_offset) };
    // A pixel's bytes of this tile: its first panel's channels below m, then its second's.
    let first = lane_mask(m - g0 * LANES) as u32;
    let mask = if valid_panels == PANELS {
        first | (lane_mask(m - (g0 + 1) * LANES) as u32) << LANES
    } else {
        first
    };
    for i in (0..valid_pixels).step_by(2) {
        let v = requant64(
            [acc[i][0], acc[i][1], acc[i + 1][0], acc[i + 1][1]],
            [rq[0], rq[1], rq[0], rq[1]],
            o,
        );
        let halves = [_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)];
        for (k, half) in halves.into_iter().enumerate().take(valid_pixels - i) {
            // SAFETY: the mask stores only this tile's channels below m of pixel p0 + i + k,
            // inside `out` by the caller's contract.
            unsafe {
                let dst = out.at((p0 + i + k) * m + g0 * LANES);
                _mm256_mask_storeu_epi8(dst as *mut i8, mask, half)
            };
        }
    }
}

/// The `PIXELS × PANELS` accumulators from `init`: `acc[i][j][lane] = init[j][lane] +
/// Σ_k x_i[k] · panel_j[k][lane]`.
///
/// # Safety
/// Each `x[i] + quad_offset(q)` (q < quads) starts 4 readable bytes; each `w[j]` points at
/// `quads · 64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_acc(
    x: [*const u8; PIXELS],
    w: [*const i8; PANELS],
    init: [__m512i; PANELS],
    quads: usize,
    quad_offset: &impl Fn(usize) -> usize,
) -> [[__m512i; PANELS]; PIXELS] {
    const { assert!(PANELS == 2, "the loop names its two weight vectors") };
    let mut acc = [init; PIXELS];
    for kq in 0..quads {
        // SAFETY: kq < quads, inside every row and panel by the caller's contract.
        unsafe {
            let w0 = _mm512_loadu_si512(w[0].add(kq * LANES * 4) as *const __m512i);
            let w1 = _mm512_loadu_si512(w[1].add(kq * LANES * 4) as *const __m512i);
            let at = quad_offset(kq);
            for (acc, &xi) in acc.iter_mut().zip(&x) {
                let v = _mm512_set1_epi32((xi.add(at) as *const i32).read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], v, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], v, w1);
            }
        }
    }
    acc
}
