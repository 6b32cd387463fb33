//! AVX-512 VNNI dense convolutions into channels-last outputs: the implicit GEMMs of
//! [`super::dense_nhwc`] on `vpdpbusd`.
//!
//! A tile is 8 output pixels × 2 panels of 16 output channels ([`NARROW`]), or 6 × 4 for
//! layers of a multiple of 64 channels ([`WIDE`]: fewer loads per `vpdpbusd`). Per tap quad
//! it loads one weight vector per panel (four taps of 16 channels) and broadcasts one dword of
//! four input bytes per pixel, which `vpdpbusd` multiplies against each: 16 or 24 independent
//! accumulators, started at the channels' int32 bias less `z_in · Σ w`
//! ([`super::avx512_lanes`]). Each accumulator is one pixel's 16 output channels; four at a
//! time are requantized per lane ([`requant64`]) and each pixel's bytes are stored
//! contiguously. Tiles at the edges recompute their last pixel or panel instead of branching,
//! and store only what is theirs.

use std::arch::x86_64::*;

use super::super::gemm::OutPtr;
use super::super::packed::PackedWeightsS8;
use super::avx512_lanes::{LANES, LaneOut, LaneRq, lane_groups, lane_mask, lane_out, requant64};
use super::dense_nhwc::{DenseCall, DenseInput, Layout, Unit, pad_images, run_units};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Tile shapes (pixels, panels of 16 output channels): 16 or 24 accumulators, with room for
/// the weight vectors and the broadcast in the 32 registers.
const NARROW: (usize, usize) = (8, 2);
const WIDE: (usize, usize) = (6, 4);

/// The convolution of `input` (in [`super::dense_nhwc::input_format`]; `kind` from
/// [`super::dense_nhwc::input_kind`]) into the channels-last `out`.
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
    let Some(dc) = DenseCall::of(op, input) else {
        return;
    };
    let (m, zp) = (a.rows(), input.qparams().zero_point);
    let pixels = dc.pixels();
    assert_eq!(out.len(), pixels * m, "output is [pixels, m]");
    let lanes = op.kernel_cache().get_or_build(input.qparams(), || {
        lane_groups(rq, m, zp, |o| a.row_sums()[o])
    });
    let rq = (&lanes[..], lane_out(rq));
    let (layout, macs) = (dc.layout(), dc.macs(m));
    match kind {
        DenseInput::Pixels => run_tiles(a, rq, (input.data(), layout), pixels, macs, out),
        DenseInput::Padded => {
            let padded = pad_images(&dc.call, input, zp as u8, dc.slack);
            run_tiles(a, rq, (&padded, layout), pixels, macs, out)
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

/// Runs every unit of the convolution on tiles of `PX` pixels × `PN` panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn run_shape<const PX: usize, const PN: usize>(
    a: &PackedWeightsS8,
    rq: (&[LaneRq], LaneOut),
    (x, layout): (&[u8], Layout),
    pixels: usize,
    macs: usize,
    out: &mut [u8],
) {
    let groups = a.panels().div_ceil(PN);
    let group_data: Vec<Group<PN>> = (0..groups).map(|g| Group::of(a, rq.0, g)).collect();
    let ptr = OutPtr(out.as_mut_ptr());
    let m = a.rows();
    run_units(
        (PX, PN),
        a,
        (layout, x.len()),
        pixels,
        macs,
        |_: &mut (), u: Unit| {
            let unit = (u.tile, u.first, &group_data[u.group]);
            // SAFETY: each unit writes only its own pixels' channels of its panels, inside
            // `out` ([pixels, m]); every read lies inside x (asserted by `run_units`).
            unsafe { tile_unit::<PX, PN>(m, rq.1, (x, layout), pixels, unit, ptr) };
        },
    );
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
    (tile, first, group): (usize, super::dense_nhwc::Pixel, &Group<PN>),
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
    // `taps · quads` quads (asserted by `run_units`).
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
