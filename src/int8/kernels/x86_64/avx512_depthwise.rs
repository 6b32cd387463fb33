//! AVX-512 depthwise 3×3 convolution on channels-last tensors, 16 channels per vector.
//!
//! In NHWC the 16 channels of a pixel are 16 contiguous bytes, so the kernel reads its input
//! and writes its output in place, with no per-channel planes to pad or transpose. It runs
//! a row segment of output pixels one group of 16 channels at a time (the group's weights and
//! requantization stay in registers), [`BLOCK`] output pixels at a time. Out-of-image taps
//! read a row of input zero-points, so padding costs nothing and `z_in · Σ w` comes off the
//! bias ([`super::avx512_lanes`]).
//!
//! An input column of the window (three pixels, one per kernel row) is loaded once per block
//! and serves every output pixel of the block whose window holds it (three at stride 1): its
//! first two rows are paired byte by byte (`(x[0], x[1])` per lane, widened to i16) and one
//! `vpdpwssd` multiplies them by the lane's weight pair of that kernel column; its third row,
//! widened to i32, pairs with a zero weight. Sums are exact: `q ≤ 255` and `|w| ≤ 255`. Four
//! pixels' results are requantized per lane together ([`requant64`]) and stored as 16 bytes
//! per output pixel. A partial last group loads and stores under a mask.

use std::arch::x86_64::*;

use super::super::{ConvCall, for_each_block, threads_for};
use super::avx512_lanes::{LANES, LaneOut, LaneRq, lane_groups, lane_mask, lane_out, requant64};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Taps of the kernel.
const TAPS: usize = 9;
/// Output pixels per block (a multiple of 4, the pixels [`requant64`] takes).
const BLOCK: usize = 8;

/// The input columns a block reads at stride `s`.
const fn columns(s: usize) -> usize {
    (BLOCK - 1) * s + 3
}

/// A group's weights as `vpdpwssd` operands, per kernel column `kx`: lane `j` of
/// `rows01[kx]` is the pair `(w[j][0][kx], w[j][1][kx])`, of `row2[kx]` `(w[j][2][kx], 0)`.
#[derive(Clone, Copy)]
struct GroupWeights {
    rows01: [__m512i; 3],
    row2: [__m512i; 3],
}

/// What the kernel derives from a layer once ([`crate::int8::KernelCache`]): each group's
/// requantization and weights.
#[derive(Clone)]
struct Prepared {
    lanes: Vec<LaneRq>,
    weights: Vec<GroupWeights>,
}

/// Group `g`'s weights from the layer's `[c][9]` taps (lanes past channel `c` zero).
#[target_feature(enable = "avx512f")]
fn group_weights(weights: &[i16], c: usize, g: usize) -> GroupWeights {
    let lanes = |taps: [usize; 2]| -> __m512i {
        let v: [i32; LANES] = std::array::from_fn(|j| {
            let ch = g * LANES + j;
            let [lo, hi] = taps.map(|k| {
                if ch < c && k < TAPS {
                    weights[ch * TAPS + k] as u16 as u32
                } else {
                    0
                }
            });
            (lo | hi << 16) as i32
        });
        // SAFETY: v is 16 i32.
        unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) }
    };
    GroupWeights {
        rows01: std::array::from_fn(|kx| lanes([kx, 3 + kx])),
        // Tap index TAPS reads as a zero weight.
        row2: std::array::from_fn(|kx| lanes([6 + kx, TAPS])),
    }
}

/// Where a block's taps lie: each kernel row's input row (the group's first channel, and the
/// pixel step; the zero-point row with step 0 outside the image), the zero-point row, the
/// image width and the channel mask.
#[derive(Clone, Copy)]
struct Window {
    rows: [(*const u8, usize); 3],
    zero: *const u8,
    w: usize,
    mask: u16,
}

/// Whether this kernel runs `op`: a 3×3 depthwise convolution (`groups = in = out`), any
/// stride and padding.
pub(super) fn takes(op: &Int8Conv2d) -> bool {
    let spec = op.spec();
    spec.groups == op.in_channels()
        && op.out_channels() == op.in_channels()
        && op.kernel_size() == [3, 3]
}

/// The convolution of the channels-last `input` into the channels-last `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn conv_depthwise(op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    let Some(call) = ConvCall::of(op, input) else {
        return;
    };
    let ConvCall {
        n,
        c,
        h,
        w,
        oh,
        ow,
        stride,
        pad,
        ..
    } = call;
    let weights = op.packed_weight();
    let groups = c.div_ceil(LANES);
    let zp = input.qparams().zero_point;
    let prepared = op
        .kernel_cache()
        .get_or_build(input.qparams(), || Prepared {
            lanes: lane_groups(rq, c, zp, |ch| {
                weights[ch * TAPS..][..TAPS].iter().map(|&v| v as i32).sum()
            }),
            weights: (0..groups).map(|g| group_weights(weights, c, g)).collect(),
        });
    let o = lane_out(rq);
    // What out-of-image taps read: the zero-point in every channel of every group.
    let zero_row = vec![zp as u8; groups * LANES];
    let x = input.data();
    // Output pixels are contiguous `c`-byte runs, dealt to the threads in equal ranges; a
    // thread runs its range row segment by row segment, group by group, so that a group's
    // weights and requantization stay in registers along the row.
    let pixels = n * oh * ow;
    let per_task = pixels.div_ceil(threads_for(pixels * c * TAPS)).max(1);
    for_each_block(out, per_task * c, |task, chunk| {
        let first = task * per_task;
        let mut done = 0;
        while done < chunk.len() / c {
            let p = first + done;
            let (b, oy, ox0) = (p / (oh * ow), p / ow % oh, p % ow);
            let count = (ow - ox0).min(chunk.len() / c - done);
            let image = &x[b * h * w * c..][..h * w * c];
            // Each kernel row's input row, or the zero-point row (column step 0) outside.
            let rows: [(*const u8, usize); 3] = std::array::from_fn(|ky| {
                let iy = (oy * stride + ky).wrapping_sub(pad);
                if iy < h {
                    (image[iy * w * c..].as_ptr(), c)
                } else {
                    (zero_row.as_ptr(), 0)
                }
            });
            let segment = &mut chunk[done * c..][..count * c];
            for (g, (gw, lane_rq)) in prepared.weights.iter().zip(&prepared.lanes).enumerate() {
                let window = Window {
                    rows: rows.map(|(row, step)| (row.wrapping_add(g * LANES), step)),
                    zero: zero_row.as_ptr().wrapping_add(g * LANES),
                    w,
                    mask: lane_mask(c - g * LANES),
                };
                for i0 in (0..count).step_by(BLOCK) {
                    let ix0 = ((ox0 + i0) * stride).wrapping_sub(pad);
                    let out = Outputs {
                        first: segment[i0 * c + g * LANES..].as_mut_ptr(),
                        step: c,
                        valid: BLOCK.min(count - i0),
                    };
                    let rq = (lane_rq, o);
                    // SAFETY: the window's rows lie inside `image` or are `zero_row`; the
                    // block's valid pixels lie inside `segment`.
                    unsafe {
                        match stride {
                            1 => block::<1, { columns(1) }>(window, ix0, stride, gw, rq, out),
                            2 => block::<2, { columns(2) }>(window, ix0, stride, gw, rq, out),
                            _ => block::<0, 0>(window, ix0, stride, gw, rq, out),
                        }
                    };
                }
            }
            done += count;
        }
    });
}

impl Window {
    /// Rows 0 and 1 of input column `ix` as i16 pairs, and row 2 as i32.
    ///
    /// # Safety
    /// The in-image column `ix` of each row lies inside its image, and `zero` holds 16
    /// readable bytes under the mask.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn column(&self, ix: usize) -> [__m512i; 2] {
        let inside = ix < self.w;
        let at = |(row, step): (*const u8, usize)| {
            if inside {
                row.wrapping_add(ix * step)
            } else {
                self.zero
            }
        };
        let (a, b, c) = (at(self.rows[0]), at(self.rows[1]), at(self.rows[2]));
        // SAFETY: each address is an in-image pixel's group or the zero row (contract above).
        let (r0, r1, r2) = unsafe {
            (
                _mm_maskz_loadu_epi8(self.mask, a as *const i8),
                _mm_maskz_loadu_epi8(self.mask, b as *const i8),
                _mm_maskz_loadu_epi8(self.mask, c as *const i8),
            )
        };
        let pairs = _mm256_set_m128i(_mm_unpackhi_epi8(r0, r1), _mm_unpacklo_epi8(r0, r1));
        [_mm512_cvtepu8_epi16(pairs), _mm512_cvtepu8_epi32(r2)]
    }
}

/// Where a block's outputs go: its first pixel's group, the pixel step, and how many of
/// the [`BLOCK`] pixels are real.
struct Outputs {
    first: *mut u8,
    step: usize,
    valid: usize,
}

/// [`BLOCK`] output pixels of one group, the first of whose windows starts at input column
/// `ix0` (wrapping: left padding), pixel `i` at `ix0 + i · stride`: accumulated from the
/// bias, requantized and stored. With `S > 0` (`S = stride`, `COLS = columns(S)`), each
/// input column is loaded once and feeds every pixel whose window holds it; `S = 0` takes any
/// stride and loads each pixel's three columns itself.
///
/// # Safety
/// Every in-image column of each of `window.rows` lies inside its image, `window.zero` holds
/// 16 readable bytes under the mask, and each of the `out.valid` output pixels holds 16
/// writable bytes under the mask.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block<const S: usize, const COLS: usize>(
    window: Window,
    ix0: usize,
    stride: usize,
    gw: &GroupWeights,
    (rq, o): (&LaneRq, LaneOut),
    out: Outputs,
) {
    // SAFETY (each column): the caller's contract on `window`.
    let column = |ix: usize| unsafe { window.column(ix) };
    let (rows01, row2) = (gw.rows01, gw.row2);
    let tap = |acc: __m512i, [pairs, third]: [__m512i; 2], kx: usize| {
        dpwssd(dpwssd(acc, pairs, rows01[kx]), third, row2[kx])
    };
    let mut acc = [rq.acc_init(); BLOCK];
    if S > 0 {
        // The block's columns first, then each pixel's three.
        const { assert!(S == 0 || COLS == columns(S)) };
        let cols: [[__m512i; 2]; COLS] = std::array::from_fn(|j| column(ix0.wrapping_add(j)));
        for (i, acc) in acc.iter_mut().enumerate() {
            for kx in 0..3 {
                *acc = tap(*acc, cols[i * S + kx], kx);
            }
        }
    } else {
        for (i, acc) in acc.iter_mut().enumerate() {
            for kx in 0..3 {
                *acc = tap(*acc, column(ix0.wrapping_add(i * stride + kx)), kx);
            }
        }
    }
    for (q, acc) in acc.chunks_exact(4).enumerate().take(out.valid.div_ceil(4)) {
        let v = requant64([acc[0], acc[1], acc[2], acc[3]], [rq; 4], o);
        let pixels: [__m128i; 4] = [
            _mm512_extracti32x4_epi32::<0>(v),
            _mm512_extracti32x4_epi32::<1>(v),
            _mm512_extracti32x4_epi32::<2>(v),
            _mm512_extracti32x4_epi32::<3>(v),
        ];
        for (k, px) in pixels.into_iter().enumerate().take(out.valid - 4 * q) {
            let dst = out.first.wrapping_add((4 * q + k) * out.step);
            // SAFETY: the mask stores only channels < c of a valid output pixel.
            unsafe { _mm_mask_storeu_epi8(dst as *mut i8, window.mask, px) };
        }
    }
}

/// `vpdpwssd`, as written: LLVM's machine combiner otherwise splits chains of
/// `_mm512_dpwssd_epi32` into `vpmaddwd` + `vpaddd` (two instructions for one).
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    // SAFETY: a register-only instruction of a feature this function requires.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    acc
}
