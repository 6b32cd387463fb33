//! AVX-512 VNNI 1×1 convolution on channels-last tensors: a GEMM `y[p, o] = Σ_k x[p, k]·w[o, k]`
//! whose operands need no per-call packing.
//!
//! In NHWC a pixel's input channels are contiguous, so four of them are one dword that
//! `vpdpbusd` broadcasts against a weight vector holding those four taps of 16 output
//! channels (weights prepacked once as `[k/4][16 channels][4]` panels,
//! [`PackedWeightsS8`] with [`LANE_ROWS`] rows). A tile is [`PIXELS`] pixels × [`PANELS`]
//! panels of 16 channels: per tap quad, two weight loads and eight broadcasts feed sixteen
//! independent accumulators. Each accumulator is one pixel's 16 output channels, requantized
//! per lane ([`requant16`]) and stored as 16 contiguous bytes of the NHWC output — the layout
//! the next layer reads. Tiles at the edges recompute their last pixel or panel instead of
//! branching, and store only what is theirs.

use std::arch::x86_64::*;

use super::super::gemm::OutPtr;
use super::super::packed::{LANE_ROWS, PackedWeightsS8};
use super::super::threads_for;
use super::avx512_lanes::{LANES, LaneOut, LaneRq, lane_groups, lane_mask, lane_out, requant16};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Pixels per tile.
const PIXELS: usize = 8;
/// Panels of 16 output channels per tile.
const PANELS: usize = 2;

/// The prepacked weights of `op` if this kernel runs it on an input of `shape`: a 1×1,
/// stride-1, unpadded, ungrouped convolution with symmetric weights and a channel count
/// that is a multiple of 4 (so a pixel's last tap quad does not read into the next pixel).
pub(super) fn weights<'a>(op: &'a Int8Conv2d, shape: &[usize]) -> Option<&'a PackedWeightsS8> {
    let spec = op.spec();
    let fits = op.kernel_size() == [1, 1]
        && spec.stride == 1
        && spec.padding == 0
        && shape.len() == 4
        && shape[1].is_multiple_of(4);
    op.lane_weights_s8().filter(|_| fits)
}

/// The convolution of the channels-last `input` into the channels-last `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn conv_pointwise(a: &PackedWeightsS8, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    debug_assert_eq!(a.panel_rows(), LANE_ROWS);
    let s = input.shape();
    let (c, pixels, m) = (s[1], s[0] * s[2] * s[3], a.rows());
    if pixels == 0 {
        return;
    }
    assert_eq!(out.len(), pixels * m, "output is [pixels, m]");
    let lanes = lane_groups(rq, m, input.qparams().zero_point, |o| a.row_sums()[o]);
    let o = lane_out(rq);
    let x = input.data();
    // Work units of one tile each (pixel tiles × panel pairs, panels fastest so that a
    // thread's pixels stay in L1 while the weights stream past), dealt to the threads in
    // equal contiguous runs: the 7×7 layers have more panels than pixel tiles.
    let (tiles, pairs) = (pixels.div_ceil(PIXELS), a.panels().div_ceil(PANELS));
    let units = tiles * pairs;
    let threads = threads_for(pixels * c * m).min(units);
    let ptr = OutPtr(out.as_mut_ptr());
    let run = |t: usize| {
        for u in units * t / threads..units * (t + 1) / threads {
            // SAFETY: each unit writes only its own pixels' channels of its panels, which lie
            // inside `out` ([pixels, m]).
            unsafe { tile_unit(a, (&lanes, o), (x, c, pixels), (u / pairs, u % pairs), ptr) };
        }
    };
    if threads == 1 {
        run(0);
    } else {
        use rayon::prelude::*;
        (0..threads).into_par_iter().for_each(run);
    }
}

/// Pixel tile `tile` × panel pair `pair` of the GEMM of `x` (`[pixels, c]`), requantized and
/// stored into the `[pixels, m]` output behind `out`.
///
/// # Safety
/// `out` points at `pixels · m` writable bytes, and no other thread writes this unit's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_unit(
    a: &PackedWeightsS8,
    (lanes, o): (&[LaneRq], LaneOut),
    (x, c, pixels): (&[u8], usize, usize),
    (tile, pair): (usize, usize),
    out: OutPtr,
) {
    let (m, panels, quads) = (a.rows(), a.panels(), a.quads());
    let p0 = tile * PIXELS;
    let valid_pixels = PIXELS.min(pixels - p0);
    let g0 = pair * PANELS;
    let valid_panels = PANELS.min(panels - g0);
    assert!(x.len() >= pixels * c && c >= quads * 4);
    // Past the edges, the last pixel and panel again (computed, never stored).
    let mut xp = [x.as_ptr(); PIXELS];
    for (i, p) in xp.iter_mut().enumerate() {
        // SAFETY: the pixel index is below `pixels` (asserted above: x holds them all).
        *p = unsafe { p.add((p0 + i.min(valid_pixels - 1)) * c) };
    }
    let w0 = a.panel(g0).as_ptr();
    let w1 = a.panel(g0 + valid_panels - 1).as_ptr();
    // SAFETY: every pixel row holds `c ≥ 4 · quads` bytes and every panel `quads` quads.
    let acc = unsafe { tile_acc(xp, [w0, w1], quads) };
    for (i, acc) in acc.iter().enumerate().take(valid_pixels) {
        for (j, &acc) in acc.iter().enumerate().take(valid_panels) {
            let g = g0 + j;
            let v = requant16(acc, &lanes[g], o);
            // SAFETY: the mask stores only this panel's channels below m of pixel p0 + i,
            // inside `out` by the caller's contract.
            unsafe {
                let dst = out.at((p0 + i) * m + g * LANES);
                _mm_mask_storeu_epi8(dst as *mut i8, lane_mask(m - g * LANES), v)
            };
        }
    }
}

/// The raw `PIXELS × PANELS` accumulators: `acc[i][j][lane] = Σ_k x_i[k] · panel_j[k][lane]`.
///
/// # Safety
/// Each `x[i]` points at `4 · quads` readable bytes, each `w[j]` at `quads · 64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_acc(
    x: [*const u8; PIXELS],
    w: [*const i8; PANELS],
    quads: usize,
) -> [[__m512i; PANELS]; PIXELS] {
    const { assert!(PANELS == 2, "the loop names its two weight vectors") };
    let mut acc = [[_mm512_setzero_si512(); PANELS]; PIXELS];
    for kq in 0..quads {
        // SAFETY: kq < quads, inside every row and panel by the caller's contract.
        unsafe {
            let w0 = _mm512_loadu_si512(w[0].add(kq * LANES * 4) as *const __m512i);
            let w1 = _mm512_loadu_si512(w[1].add(kq * LANES * 4) as *const __m512i);
            for (acc, &xi) in acc.iter_mut().zip(&x) {
                let v = _mm512_set1_epi32((xi.add(kq * 4) as *const i32).read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], v, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], v, w1);
            }
        }
    }
    acc
}
