//! AVX-512 depthwise 3×3 and 5×5 convolution on channels-last tensors, 16 channels per vector.
//!
//! In NHWC the 16 channels of a pixel are 16 contiguous bytes, so the kernel reads its input
//! and writes its output in place, with no per-channel planes to pad or transpose. It runs
//! a row segment of output pixels one group of 16 channels at a time (the group's weights and
//! requantization stay in registers), [`BLOCK`] output pixels at a time. Out-of-image taps
//! read a row of input zero-points, so padding costs nothing and `z_in · Σ w` comes off the
//! bias ([`super::avx512_lanes`]).
//!
//! An input column of the window (`K` pixels, one per kernel row) is loaded once per block
//! and serves every output pixel of the block whose window holds it (`K` at stride 1): its
//! rows are paired byte by byte (`(x[0], x[1])`, `(x[2], x[3])` per lane, widened to i16) and
//! one `vpdpwssd` per pair multiplies them by the lane's weight pair of that kernel column;
//! its last row, widened to i32, pairs with a zero weight. Sums are exact: `q ≤ 255` and `|w| ≤ 255`. Four
//! pixels' results are requantized per lane together ([`requant64`]) and stored as 16 bytes
//! per output pixel. A partial last group loads and stores under a mask.

use std::arch::x86_64::*;

use super::super::{ConvCall, for_each_block, tasks_for};
use super::avx512_lanes::{LANES, LaneOut, LaneRq, lane_groups, lane_mask, lane_out, requant64};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Output pixels per block (a multiple of 4, the pixels [`requant64`] takes).
const BLOCK: usize = 8;

/// The input columns a block of a `K`-wide kernel reads at stride `s`.
const fn columns(s: usize, k: usize) -> usize {
    (BLOCK - 1) * s + k
}

/// A group's weights of a `K×K` kernel (`P = K / 2` row pairs) as `vpdpwssd` operands, per
/// kernel column `kx`: lane `j` of `pairs[p][kx]` is `(w[j][2p][kx], w[j][2p+1][kx])`, of
/// `last[kx]` `(w[j][K−1][kx], 0)`.
#[derive(Clone, Copy)]
struct GroupWeights<const K: usize, const P: usize> {
    pairs: [[__m512i; K]; P],
    last: [__m512i; K],
}

/// What the kernel derives from a layer once ([`crate::int8::KernelCache`]): each group's
/// requantization and weights.
#[derive(Clone)]
struct Prepared<const K: usize, const P: usize> {
    lanes: Vec<LaneRq>,
    weights: Vec<GroupWeights<K, P>>,
}

/// Group `g`'s weights from the layer's `[c][K·K]` taps (lanes past channel `c` zero).
#[target_feature(enable = "avx512f")]
fn group_weights<const K: usize, const P: usize>(
    weights: &[i16],
    c: usize,
    g: usize,
) -> GroupWeights<K, P> {
    let taps = K * K;
    let lanes = |at: [usize; 2]| -> __m512i {
        let v: [i32; LANES] = std::array::from_fn(|j| {
            let ch = g * LANES + j;
            let [lo, hi] = at.map(|k| {
                if ch < c && k < taps {
                    weights[ch * taps + k] as u16 as u32
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
        pairs: std::array::from_fn(|p| {
            std::array::from_fn(|kx| lanes([2 * p * K + kx, (2 * p + 1) * K + kx]))
        }),
        // Tap index `taps` reads as a zero weight.
        last: std::array::from_fn(|kx| lanes([(K - 1) * K + kx, taps])),
    }
}

/// Where a block's taps lie: each kernel row's input row (the group's first channel, and the
/// pixel step; the zero-point row with step 0 outside the image), the zero-point row, the
/// image width and the channel mask.
#[derive(Clone, Copy)]
struct Window<const K: usize> {
    rows: [(*const u8, usize); K],
    zero: *const u8,
    w: usize,
    mask: u16,
}

/// Whether this kernel runs `op`: a 3×3 or 5×5 depthwise convolution (`groups = in = out`),
/// any stride and padding.
pub(super) fn takes(op: &Int8Conv2d) -> bool {
    let spec = op.spec();
    spec.groups == op.in_channels()
        && op.out_channels() == op.in_channels()
        && matches!(op.kernel_size(), [3, 3] | [5, 5])
}

/// The convolution of the channels-last `input` into the channels-last `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn conv_depthwise(op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    match op.kernel_size() {
        [5, 5] => conv_k::<5, 2>(op, rq, input, out),
        _ => conv_k::<3, 1>(op, rq, input, out),
    }
}

/// [`conv_depthwise`] for a `K×K` kernel (`P = K / 2`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn conv_k<const K: usize, const P: usize>(
    op: &Int8Conv2d,
    rq: &Requant,
    input: &QTensor,
    out: &mut [u8],
) {
    let taps = K * K;
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
        .get_or_build(input.qparams(), || Prepared::<K, P> {
            lanes: lane_groups(rq, c, zp, |ch| {
                weights[ch * taps..][..taps].iter().map(|&v| v as i32).sum()
            }),
            weights: (0..groups)
                .map(|g| group_weights::<K, P>(weights, c, g))
                .collect(),
        });
    let o = lane_out(rq);
    // What out-of-image taps read: the zero-point in every channel of every group.
    let zero_row = vec![zp as u8; groups * LANES];
    let x = input.data();
    // Output pixels are contiguous `c`-byte runs, in equal ranges claimed by the threads
    // ([`tasks_for`]); a task runs its range row segment by row segment, group by group, so
    // that a group's weights and requantization stay in registers along the row.
    let pixels = n * oh * ow;
    let per_task = pixels.div_ceil(tasks_for(pixels * c * taps)).max(1);
    for_each_block(out, per_task * c, |task, chunk| {
        let first = task * per_task;
        let mut done = 0;
        while done < chunk.len() / c {
            let p = first + done;
            let (b, oy, ox0) = (p / (oh * ow), p / ow % oh, p % ow);
            let count = (ow - ox0).min(chunk.len() / c - done);
            let image = &x[b * h * w * c..][..h * w * c];
            // Each kernel row's input row, or the zero-point row (column step 0) outside.
            let rows: [(*const u8, usize); K] = std::array::from_fn(|ky| {
                let iy = (oy * stride + ky).wrapping_sub(pad);
                if iy < h {
                    (image[iy * w * c..].as_ptr(), c)
                } else {
                    (zero_row.as_ptr(), 0)
                }
            });
            let segment = &mut chunk[done * c..][..count * c];
            // The rows the next output row adds to the window, while this one runs: the groups
            // walk each row 16 bytes in `c`, a stride the hardware prefetchers miss.
            for ky in K.saturating_sub(stride)..K {
                let iy = ((oy + 1) * stride + ky).wrapping_sub(pad);
                if iy < h {
                    let first = ((ox0 * stride).saturating_sub(pad)).min(w - 1);
                    let last = ((ox0 + count - 1) * stride + K - 1)
                        .saturating_sub(pad)
                        .min(w - 1);
                    let row = &image[iy * w * c..][first * c..(last + 1) * c];
                    for line in row.chunks(64) {
                        _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8);
                    }
                }
            }
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
                        match (K, stride) {
                            (3, 1) => block::<K, P, 1, { columns(1, 3) }>(
                                window, ix0, stride, gw, rq, out,
                            ),
                            (3, 2) => block::<K, P, 2, { columns(2, 3) }>(
                                window, ix0, stride, gw, rq, out,
                            ),
                            (5, 1) => block::<K, P, 1, { columns(1, 5) }>(
                                window, ix0, stride, gw, rq, out,
                            ),
                            (5, 2) => block::<K, P, 2, { columns(2, 5) }>(
                                window, ix0, stride, gw, rq, out,
                            ),
                            _ => block::<K, P, 0, 0>(window, ix0, stride, gw, rq, out),
                        }
                    };
                }
            }
            done += count;
        }
    });
}

/// One input column of a window: its row pairs as i16 pairs, its last row as i32.
#[derive(Clone, Copy)]
struct Column<const P: usize> {
    pairs: [__m512i; P],
    last: __m512i,
}

impl<const K: usize> Window<K> {
    /// Input column `ix`: rows `(2p, 2p+1)` as i16 pairs, row `K−1` as i32.
    ///
    /// # Safety
    /// The in-image column `ix` of each row lies inside its image, and `zero` holds 16
    /// readable bytes under the mask.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn column<const P: usize>(&self, ix: usize) -> Column<P> {
        let inside = ix < self.w;
        let row = |ky: usize| -> __m128i {
            let (row, step) = self.rows[ky];
            let at = if inside {
                row.wrapping_add(ix * step)
            } else {
                self.zero
            };
            // SAFETY: an in-image pixel's group or the zero row (contract above).
            unsafe { _mm_maskz_loadu_epi8(self.mask, at as *const i8) }
        };
        let pairs = std::array::from_fn(|p| {
            let (r0, r1) = (row(2 * p), row(2 * p + 1));
            let pairs = _mm256_set_m128i(_mm_unpackhi_epi8(r0, r1), _mm_unpacklo_epi8(r0, r1));
            _mm512_cvtepu8_epi16(pairs)
        });
        Column {
            pairs,
            last: _mm512_cvtepu8_epi32(row(K - 1)),
        }
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
/// bias, requantized and stored. With `S > 0` (`S = stride`, `COLS = columns(S, K)`; other
/// `COLS` are the next case), each input column is loaded once
/// and feeds every pixel whose window holds it; `S = 0` takes any stride and loads each pixel's
/// `K` columns itself.
///
/// # Safety
/// Every in-image column of each of `window.rows` lies inside its image, `window.zero` holds
/// 16 readable bytes under the mask, and each of the `out.valid` output pixels holds 16
/// writable bytes under the mask.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block<const K: usize, const P: usize, const S: usize, const COLS: usize>(
    window: Window<K>,
    ix0: usize,
    stride: usize,
    gw: &GroupWeights<K, P>,
    (rq, o): (&LaneRq, LaneOut),
    out: Outputs,
) {
    // SAFETY (each column): the caller's contract on `window`.
    let column = |ix: usize| unsafe { window.column::<P>(ix) };
    let tap = |acc: __m512i, col: &Column<P>, kx: usize| {
        let acc = (0..P).fold(acc, |acc, p| dpwssd(acc, col.pairs[p], gw.pairs[p][kx]));
        dpwssd(acc, col.last, gw.last[kx])
    };
    let mut acc = [rq.acc_init(); BLOCK];
    if S > 0 && COLS == columns(S, K) {
        // The block's columns first, then each pixel's `K`.
        let cols: [Column<P>; COLS] = std::array::from_fn(|j| column(ix0.wrapping_add(j)));
        for (i, acc) in acc.iter_mut().enumerate() {
            for kx in 0..K {
                *acc = tap(*acc, &cols[i * S + kx], kx);
            }
        }
    } else {
        for (i, acc) in acc.iter_mut().enumerate() {
            for kx in 0..K {
                *acc = tap(*acc, &column(ix0.wrapping_add(i * stride + kx)), kx);
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
