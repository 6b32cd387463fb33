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
//! and serves every output pixel of the block whose window holds it (`K` at stride 1), in
//! the form the layer's weights multiply ([`super::avx512_dw_taps`]: i16 pairs on `vpdpwssd`,
//! or for 3×3 weights that fit i8, every PyTorch qconfig's, u8 quads on `vpdpbusd`, half the
//! multiplies). Four pixels' results are requantized per lane together ([`requant64`]) and
//! stored as 16 bytes per output pixel. A partial last group loads and stores under a mask (a
//! full one without: masked stores are slow on AMD Zen). While a row segment runs, the input
//! rows the next one adds are prefetched: the groups walk each row 16 bytes in `c`, a stride
//! the hardware prefetchers miss.

use std::arch::x86_64::*;

use super::super::ConvCall;
use super::avx512_dw_taps::{GroupWeights, QuadWeights, Taps};
use super::avx512_lanes::{LANES, LaneOut, LaneRq, lane_groups, lane_mask, lane_out, requant64};
use super::dw_segments::{RowSegment, for_each_row_segment};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Output pixels per block (a multiple of 4, the pixels [`requant64`] takes).
const BLOCK: usize = 8;

/// The input columns a block of a `K`-wide kernel reads at stride `s`.
const fn columns(s: usize, k: usize) -> usize {
    (BLOCK - 1) * s + k
}

/// Each 16-channel group's requantization and weights `W`.
#[derive(Clone)]
struct Prepared<W> {
    lanes: Vec<LaneRq>,
    weights: Vec<W>,
}

/// Where a block's taps lie: each kernel row's input row (the group's first channel, and the
/// pixel step; the zero-point row with step 0 outside the image), the zero-point row, the
/// image width and the channel mask.
#[derive(Clone, Copy)]
pub(super) struct Window<const K: usize> {
    pub(super) rows: [(*const u8, usize); K],
    pub(super) zero: *const u8,
    pub(super) w: usize,
    pub(super) mask: u16,
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
    let prepared = op.kernel_cache().get_or_build(input.qparams(), || {
        Layer::prepare(op, rq, input.qparams().zero_point)
    });
    match &*prepared {
        Layer::Quads(p) => conv_k::<3, QuadWeights>(op, p, rq, input, out),
        Layer::Pairs3(p) => conv_k::<3, GroupWeights<3, 1>>(op, p, rq, input, out),
        Layer::Pairs5(p) => conv_k::<5, GroupWeights<5, 2>>(op, p, rq, input, out),
    }
}

/// What the kernel derives from a layer once ([`crate::int8::KernelCache`]), in the form its
/// kernel size and weights take.
#[derive(Clone)]
enum Layer {
    /// 3×3, weights that fit i8.
    Quads(Prepared<QuadWeights>),
    Pairs3(Prepared<GroupWeights<3, 1>>),
    Pairs5(Prepared<GroupWeights<5, 2>>),
}

impl Layer {
    /// The layer's data for raw inputs with zero-point `zp`.
    fn prepare(op: &Int8Conv2d, rq: &Requant, zp: i32) -> Self {
        let (weights, c) = (op.packed_weight(), op.in_channels());
        fn groups<const K: usize, W: Taps<K>>(
            w: &[i16],
            c: usize,
            rq: &Requant,
            zp: i32,
        ) -> Prepared<W> {
            // SAFETY: this kernel runs only on CPUs with AVX-512 (`conv_depthwise`).
            let lanes = unsafe {
                lane_groups(rq, c, zp, |ch| {
                    w[ch * K * K..][..K * K].iter().map(|&v| v as i32).sum()
                })
            };
            Prepared {
                lanes,
                weights: (0..c.div_ceil(LANES)).map(|g| W::build(w, c, g)).collect(),
            }
        }
        match op.kernel_size() {
            [5, 5] => Layer::Pairs5(groups::<5, _>(weights, c, rq, zp)),
            _ if weights.iter().all(|&v| i8::try_from(v).is_ok()) => {
                Layer::Quads(groups::<3, _>(weights, c, rq, zp))
            }
            _ => Layer::Pairs3(groups::<3, _>(weights, c, rq, zp)),
        }
    }
}

/// [`conv_depthwise`] for a `K×K` kernel with weights `W`, prepared as `prepared`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn conv_k<const K: usize, W: Taps<K>>(
    op: &Int8Conv2d,
    prepared: &Prepared<W>,
    rq: &Requant,
    input: &QTensor,
    out: &mut [u8],
) {
    let Some(call) = ConvCall::of(op, input) else {
        return;
    };
    let ConvCall {
        c, w, stride, pad, ..
    } = call;
    let groups = c.div_ceil(LANES);
    let zp = input.qparams().zero_point;
    let o = lane_out(rq);
    // What out-of-image taps read: the zero-point in every channel of every group.
    let zero_row = vec![zp as u8; groups * LANES];
    let x = input.data();
    for_each_row_segment::<K>(&call, x, &zero_row, out, |seg| {
        let RowSegment {
            rows,
            ox0,
            out: segment,
        } = seg;
        let count = segment.len() / c;
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
                        (3, 1) => {
                            block::<K, W, 1, { columns(1, 3) }>(window, ix0, stride, gw, rq, out)
                        }
                        (3, 2) => {
                            block::<K, W, 2, { columns(2, 3) }>(window, ix0, stride, gw, rq, out)
                        }
                        (5, 1) => {
                            block::<K, W, 1, { columns(1, 5) }>(window, ix0, stride, gw, rq, out)
                        }
                        (5, 2) => {
                            block::<K, W, 2, { columns(2, 5) }>(window, ix0, stride, gw, rq, out)
                        }
                        _ => block::<K, W, 0, 0>(window, ix0, stride, gw, rq, out),
                    }
                };
            }
        }
    });
}

impl<const K: usize> Window<K> {
    /// The group's 16 bytes at `at` (those past the last channel zero). Unmasked for a full
    /// group: masked loads and stores cost more, the stores much more on AMD Zen.
    ///
    /// # Safety
    /// The group's bytes under the mask at `at` are readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn load(&self, at: *const u8) -> __m128i {
        // SAFETY: the caller's contract (all 16 bytes for a full mask).
        unsafe {
            match self.mask {
                u16::MAX => _mm_loadu_si128(at as *const __m128i),
                mask => _mm_maskz_loadu_epi8(mask, at as *const i8),
            }
        }
    }

    /// Stores the group's bytes of `v` at `dst` (see [`Self::load`]).
    ///
    /// # Safety
    /// The group's bytes under the mask at `dst` are writable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store(&self, dst: *mut u8, v: __m128i) {
        // SAFETY: the caller's contract (all 16 bytes for a full mask).
        unsafe {
            match self.mask {
                u16::MAX => _mm_storeu_si128(dst as *mut __m128i, v),
                mask => _mm_mask_storeu_epi8(dst as *mut i8, mask, v),
            }
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
unsafe fn block<const K: usize, W: Taps<K>, const S: usize, const COLS: usize>(
    window: Window<K>,
    ix0: usize,
    stride: usize,
    gw: &W,
    (rq, o): (&LaneRq, LaneOut),
    out: Outputs,
) {
    // Direct calls, no closures: LLVM leaves a closure around the quad column outlined.
    let mut acc = [rq.acc_init(); BLOCK];
    // SAFETY (every `column` and `tap`): the caller's contract on `window`; this function's
    // features.
    if S > 0 && COLS == columns(S, K) {
        // The block's columns first, then each pixel's `K`.
        let mut cols = [unsafe { W::column(&window, ix0) }; COLS];
        for (j, col) in cols.iter_mut().enumerate().skip(1) {
            *col = unsafe { W::column(&window, ix0.wrapping_add(j)) };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            for kx in 0..K {
                *acc = unsafe { gw.tap(*acc, &cols[i * S + kx], kx) };
            }
        }
    } else {
        for (i, acc) in acc.iter_mut().enumerate() {
            for kx in 0..K {
                let col = unsafe { W::column(&window, ix0.wrapping_add(i * stride + kx)) };
                *acc = unsafe { gw.tap(*acc, &col, kx) };
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
            unsafe { window.store(dst, px) };
        }
    }
}
