//! AVX2 depthwise 3×3 and 5×5 convolution (stride 1 or 2) on channels-last tensors, 8
//! channels per vector: the AVX2 form of [`super::avx512_depthwise`].
//!
//! In NHWC the 8 channels of a group are 8 contiguous bytes of a pixel, so the kernel reads
//! its input and writes its output in place: no per-channel padded planes. A task runs a row
//! segment of output pixels one group at a time ([`segment`]); each input column of the
//! window (`K` pixels, one per kernel row) is loaded once and feeds every output pixel whose
//! window holds it. Its rows are paired byte by byte and
//! widened to i16 (`(x[0][ch], x[1][ch])` per i32 lane), one `vpmaddwd` + `vpaddd` per pair
//! against the lane's weight pair of that kernel column; the last row, widened to i32, pairs
//! with a zero weight. Products are exact (`q ≤ 255`, `|w| ≤ 255`, at most 25 per lane).
//!
//! The kernel multiplies raw `q_in` rather than `q_in − z_in`: out-of-image taps read a row of
//! input zero-points, so padding costs nothing, and each channel's int32 bias takes
//! `z_in · Σ w` off (exact in wrapping i32 arithmetic). Four pixels' accumulators are
//! requantized together ([`requant32`]), as [`Requant::apply`] step by step.

use std::arch::x86_64::*;

use super::super::ConvCall;
use super::avx2::{OutRq, RowRq, lane_rows, out_rq, requant32};
use super::dw_segments::{RowSegment, for_each_row_segment};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// Channels per vector (one i32 lane each).
const LANES: usize = 8;

/// Whether this kernel runs `op`: a 3×3 or 5×5 depthwise convolution (`groups = in = out`)
/// with stride 1 or 2, any padding.
pub(super) fn takes(op: &Int8Conv2d) -> bool {
    let spec = op.spec();
    spec.groups == op.in_channels()
        && op.out_channels() == op.in_channels()
        && matches!(op.kernel_size(), [3, 3] | [5, 5])
        && matches!(spec.stride, 1 | 2)
}

/// A group's weights of a `K×K` kernel (`P = K / 2` row pairs) as `vpmaddwd` operands, per
/// kernel column `kx`: lane `j` of `pairs[p][kx]` is `(w[j][2p][kx], w[j][2p+1][kx])`, of
/// `last[kx]` `(w[j][K−1][kx], 0)`.
#[derive(Clone, Copy)]
struct GroupWeights<const K: usize, const P: usize> {
    pairs: [[__m256i; K]; P],
    last: [__m256i; K],
}

/// Each group's requantization and weights.
#[derive(Clone)]
struct Prepared<const K: usize, const P: usize> {
    rq: Vec<RowRq>,
    weights: Vec<GroupWeights<K, P>>,
}

/// What the kernel derives from a layer once ([`crate::int8::KernelCache`]).
#[derive(Clone)]
enum Layer {
    K3(Prepared<3, 1>),
    K5(Prepared<5, 2>),
}

/// The convolution of the channels-last `input` into the channels-last `out` (the caller
/// checked [`takes`]).
#[target_feature(enable = "avx2")]
pub(super) fn conv_depthwise(op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    let zp = input.qparams().zero_point;
    let layer = op.kernel_cache().get_or_build(input.qparams(), || {
        // A closure inherits this function's AVX2.
        match op.kernel_size() {
            [5, 5] => Layer::K5(prepare(op, rq, zp)),
            _ => Layer::K3(prepare(op, rq, zp)),
        }
    });
    match &*layer {
        Layer::K3(p) => conv_k(op, p, rq, input, out),
        Layer::K5(p) => conv_k(op, p, rq, input, out),
    }
}

/// The layer's groups for raw inputs with zero-point `zp` (lanes past the last channel have
/// zero weights and repeat its requantization; their outputs are never stored).
#[target_feature(enable = "avx2")]
fn prepare<const K: usize, const P: usize>(
    op: &Int8Conv2d,
    rq: &Requant,
    zp: i32,
) -> Prepared<K, P> {
    let (weights, c, taps) = (op.packed_weight(), op.in_channels(), K * K);
    let groups = c.div_ceil(LANES);
    let sum = |ch: usize| weights[ch * taps..][..taps].iter().map(|&v| v as i32).sum();
    let rq = lane_rows(rq, (groups, c), zp, sum);
    let weights = (0..groups)
        .map(|g| {
            // Lane j: the i16 pair (tap a, tap b) of channel g·8 + j; tap index `taps` is 0.
            let lanes = |[a, b]: [usize; 2]| -> __m256i {
                let v: [i32; LANES] = std::array::from_fn(|j| {
                    let ch = g * LANES + j;
                    let [lo, hi] = [a, b].map(|k| match ch < c && k < taps {
                        true => weights[ch * taps + k] as u16 as u32,
                        false => 0,
                    });
                    (lo | hi << 16) as i32
                });
                // SAFETY: v is 8 i32.
                unsafe { _mm256_loadu_si256(v.as_ptr() as *const __m256i) }
            };
            GroupWeights {
                pairs: std::array::from_fn(|p| {
                    std::array::from_fn(|kx| lanes([2 * p * K + kx, (2 * p + 1) * K + kx]))
                }),
                last: std::array::from_fn(|kx| lanes([(K - 1) * K + kx, taps])),
            }
        })
        .collect();
    Prepared { rq, weights }
}

/// [`conv_depthwise`] for a `K×K` kernel, prepared as `prepared`.
#[target_feature(enable = "avx2")]
fn conv_k<const K: usize, const P: usize>(
    op: &Int8Conv2d,
    prepared: &Prepared<K, P>,
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
    let o = out_rq(rq);
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
        for (g, (gw, grq)) in prepared.weights.iter().zip(&prepared.rq).enumerate() {
            let window = Window {
                rows: rows.map(|(row, step)| (row.wrapping_add(g * LANES), step)),
                zero: zero_row.as_ptr().wrapping_add(g * LANES),
                w,
                lanes: LANES.min(c - g * LANES),
            };
            let ix0 = (ox0 * stride).wrapping_sub(pad);
            let out = Outputs {
                first: segment[g * LANES..].as_mut_ptr(),
                step: c,
                valid: count,
            };
            // SAFETY: the window's rows lie inside `image` or are `zero_row`; the
            // segment's pixels lie inside `segment`.
            unsafe {
                match stride {
                    1 => self::segment::<K, P, 1>(window, ix0, gw, grq, o, out),
                    _ => self::segment::<K, P, 2>(window, ix0, gw, grq, o, out),
                }
            };
        }
    });
}

/// Where a block's taps lie: each kernel row's input row (the group's first channel, and the
/// pixel step; the zero-point row with step 0 outside the image), the zero-point row, the
/// image width and how many of the group's 8 channels exist.
#[derive(Clone, Copy)]
struct Window<const K: usize> {
    rows: [(*const u8, usize); K],
    zero: *const u8,
    w: usize,
    lanes: usize,
}

/// One input column of a window: its row pairs as i16 pairs, its last row as i32.
#[derive(Clone, Copy)]
struct Column<const P: usize> {
    pairs: [__m256i; P],
    last: __m256i,
}

impl<const K: usize> Window<K> {
    /// The group's 8 bytes at `at` (the low half; those past the last channel zero).
    ///
    /// # Safety
    /// The group's `lanes` bytes at `at` are readable.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(&self, at: *const u8) -> __m128i {
        if self.lanes == LANES {
            // SAFETY: the caller's contract (8 bytes).
            unsafe { _mm_loadl_epi64(at as *const __m128i) }
        } else {
            let mut bytes = [0u8; 16];
            // SAFETY: the caller's contract (`lanes` bytes), into a 16-byte buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(at, bytes.as_mut_ptr(), self.lanes);
                _mm_loadu_si128(bytes.as_ptr() as *const __m128i)
            }
        }
    }

    /// Input column `ix` (wrapping: left padding): rows `(2p, 2p+1)` as i16 pairs, row `K−1`
    /// as i32.
    ///
    /// # Safety
    /// The in-image column `ix` of each row lies inside its image, and `zero` holds the
    /// group's `lanes` readable bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn column<const P: usize>(&self, ix: usize) -> Column<P> {
        let inside = ix < self.w;
        // Plain loops, no closures: LLVM leaves a closure here outlined.
        let mut rows = [_mm_setzero_si128(); K];
        for (ky, r) in rows.iter_mut().enumerate() {
            let (row, step) = self.rows[ky];
            let at = if inside {
                row.wrapping_add(ix * step)
            } else {
                self.zero
            };
            // SAFETY: an in-image pixel's group or the zero row (contract above).
            *r = unsafe { self.load(at) };
        }
        let mut pairs = [_mm256_setzero_si256(); P];
        for (p, pair) in pairs.iter_mut().enumerate() {
            *pair = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(rows[2 * p], rows[2 * p + 1]));
        }
        Column {
            pairs,
            last: _mm256_cvtepu8_epi32(rows[K - 1]),
        }
    }
}

/// Where a segment's outputs go: its first pixel's group, the pixel step, and how many
/// pixels it has.
struct Outputs {
    first: *mut u8,
    step: usize,
    valid: usize,
}

/// The `out.valid` output pixels of a row segment of one group, the first of whose windows
/// starts at input column `ix0` (wrapping: left padding), pixel `i` at `ix0 + i · S`:
/// accumulated from the group's starting value, requantized four at a time and stored.
///
/// The window's `K` columns roll along the row in registers: each pixel loads only the `S`
/// columns its window adds (one at stride 1), so every input column is loaded once.
///
/// # Safety
/// Every in-image column of each of `window.rows` lies inside its image, `window.zero` holds
/// the group's readable bytes, and each of the `out.valid` output pixels holds the group's
/// writable bytes.
#[target_feature(enable = "avx2")]
unsafe fn segment<const K: usize, const P: usize, const S: usize>(
    window: Window<K>,
    ix0: usize,
    gw: &GroupWeights<K, P>,
    rq: &RowRq,
    o: OutRq,
    out: Outputs,
) {
    // Before pixel i, win[kx] (kx ≥ S) holds column (i − 1)·S + kx of the segment. Constant
    // indices only, in fully unrolled loops: the array lives in registers.
    let empty = Column {
        pairs: [_mm256_setzero_si256(); P],
        last: _mm256_setzero_si256(),
    };
    let mut win = [empty; K];
    for (kx, col) in win.iter_mut().enumerate().skip(S) {
        // SAFETY: the caller's contract on `window` (all columns below).
        *col = unsafe { window.column(ix0.wrapping_add(kx - S)) };
    }
    let mut q = 0;
    while q < out.valid {
        let mut acc = [rq.bias_i32; 4];
        for (r, a) in acc.iter_mut().enumerate() {
            let at = ix0.wrapping_add((q + r) * S);
            // Constant indices (not `copy_within`), so that the moves stay register renames.
            #[allow(clippy::needless_range_loop)]
            for kx in S..K {
                win[kx - S] = win[kx];
            }
            for (kx, col) in win.iter_mut().enumerate().skip(K - S) {
                // SAFETY: as above.
                *col = unsafe { window.column(at.wrapping_add(kx)) };
            }
            for (kx, col) in win.iter().enumerate() {
                for p in 0..P {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(col.pairs[p], gw.pairs[p][kx]));
                }
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(col.last, gw.last[kx]));
            }
        }
        let v = requant32(acc, [*rq; 4], o);
        let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        if q + 4 <= out.valid && window.lanes == LANES {
            // SAFETY: the group's 8 bytes of four valid output pixels (the caller's contract).
            unsafe {
                let dst = out.first.wrapping_add(q * out.step);
                _mm_storel_epi64(dst as *mut __m128i, lo);
                _mm_storeh_pd(dst.wrapping_add(out.step) as *mut f64, _mm_castsi128_pd(lo));
                _mm_storel_epi64(dst.wrapping_add(2 * out.step) as *mut __m128i, hi);
                _mm_storeh_pd(
                    dst.wrapping_add(3 * out.step) as *mut f64,
                    _mm_castsi128_pd(hi),
                );
            }
            q += 4;
            continue;
        }
        let pixels = [
            lo,
            _mm_unpackhi_epi64(lo, lo),
            hi,
            _mm_unpackhi_epi64(hi, hi),
        ];
        for (k, px) in pixels.into_iter().enumerate().take(out.valid - q) {
            let dst = out.first.wrapping_add((q + k) * out.step);
            // SAFETY: the group's bytes of a valid output pixel (the caller's contract).
            unsafe {
                if window.lanes == LANES {
                    _mm_storel_epi64(dst as *mut __m128i, px);
                } else {
                    let mut bytes = [0u8; 16];
                    _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, px);
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, window.lanes);
                }
            }
        }
        q += 4;
    }
}
