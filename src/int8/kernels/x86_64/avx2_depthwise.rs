//! AVX2 depthwise convolution (`groups = in = out`), channel by channel over a zero-padded i16
//! copy of the channel (input zero-point removed, so padding is 0).
//!
//! 3×3 kernels with stride 1 or 2 (all of MobileNetV2's) multiply two taps per `vpmaddwd`: each
//! i32 lane holds a pair of neighbouring columns — `(x[c], x[c+1])` for every `c` at stride 1
//! (built once per channel), the padded row itself read as i32 at stride 2 (its lane `j` is
//! `(x[2j], x[2j+1])`) — against the broadcast tap pair `(w[ky][0], w[ky][1])`; the third tap
//! pairs with a zero weight. Other kernels take the generic path (one `vpmulld` per tap).
//! Either way 8 output pixels per vector, requantized by [`requant16`] exactly as
//! [`Requant::apply`](crate::int8::Requant::apply).

use std::arch::x86_64::*;

use super::super::{ConvCall, for_each_block, threads_for};
use super::avx2::{OutRq, RowRq, out_rq, requant16, row_rq};
use crate::int8::conv::Int8Conv2d;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// A depthwise convolution (the caller checked `groups = in = out`, stride ≤ 2).
#[target_feature(enable = "avx2")]
pub(super) fn conv_depthwise(op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    let Some(call) = ConvCall::of(op, input) else {
        return;
    };
    if [call.kh, call.kw] != [3, 3] {
        return generic(op, call, rq, input, out);
    }
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
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    // Row slack so that the last vector of a row never reads past it (see `channel_3x3`).
    let prow = (pw + 24).next_multiple_of(16);
    let zp = input.qparams().zero_point as i16;
    let o = out_rq(rq);
    let plane_out = oh * ow;
    let weights = op.packed_weight();
    let block = c.div_ceil(threads_for(c * plane_out * 9)).max(1);
    for b in 0..n {
        let image = &input.data()[b * c * h * w..][..c * h * w];
        let dst = &mut out[b * c * plane_out..][..c * plane_out];
        for_each_block(dst, block * plane_out, |index, chunk| {
            let mut padded = vec![0i16; ph * prow];
            let mut pairs = vec![0i32; if stride == 1 { ph * prow } else { 0 }];
            for (r, dst) in chunk.chunks_exact_mut(plane_out).enumerate() {
                let ch = index * block + r;
                fill_padded(&image[ch * h * w..][..h * w], w, pad, prow, zp, &mut padded);
                let (lanes, row_len, third) = if stride == 1 {
                    build_pairs(&padded, &mut pairs);
                    (&pairs[..], prow, 2)
                } else {
                    // SAFETY: i16 pairs reinterpreted as i32 (alignment checked by align_to).
                    let (head, lanes, _) = unsafe { padded.align_to::<i32>() };
                    assert!(head.is_empty(), "Vec<i16> of even length aligns to i32");
                    (lanes, prow / 2, 1)
                };
                let taps: &[i16; 9] = weights[ch * 9..][..9].try_into().expect("3x3 taps");
                let geometry = Rows {
                    lanes,
                    row_len,
                    third,
                    stride,
                };
                channel_3x3(&geometry, taps, (oh, ow), row_rq(rq, ch), o, dst);
            }
        });
    }
}

/// Writes `src` (`[h, w]` quint8) minus `zp` into the interior of the `prow`-wide padded plane;
/// the border stays zero.
#[target_feature(enable = "avx2")]
fn fill_padded(src: &[u8], w: usize, pad: usize, prow: usize, zp: i16, padded: &mut [i16]) {
    let zpv = _mm256_set1_epi16(zp);
    for (y, line) in src.chunks_exact(w).enumerate() {
        let row = &mut padded[(y + pad) * prow + pad..][..w];
        let mut x = 0;
        while x + 16 <= w {
            // SAFETY: x + 16 ≤ w, the length of both `line` and `row`.
            unsafe {
                let v = _mm_loadu_si128(line.as_ptr().add(x) as *const __m128i);
                let d = _mm256_sub_epi16(_mm256_cvtepu8_epi16(v), zpv);
                _mm256_storeu_si256(row.as_mut_ptr().add(x) as *mut __m256i, d);
            }
            x += 16;
        }
        for (d, &q) in row[x..].iter_mut().zip(&line[x..]) {
            *d = q as i16 - zp;
        }
    }
}

/// `pairs[c] = (padded[c], padded[c + 1])` along every row (the last 16 lanes of a row stay
/// unused).
#[target_feature(enable = "avx2")]
fn build_pairs(padded: &[i16], pairs: &mut [i32]) {
    assert_eq!(padded.len(), pairs.len());
    let mut c = 0;
    // Each step reads padded[c .. c + 17] and writes pairs[c .. c + 16].
    while c + 17 <= padded.len() {
        // SAFETY: c + 17 ≤ len for both (equal lengths).
        unsafe {
            let a = _mm256_loadu_si256(padded.as_ptr().add(c) as *const __m256i);
            let b = _mm256_loadu_si256(padded.as_ptr().add(c + 1) as *const __m256i);
            let (lo, hi) = (_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b));
            let p = pairs.as_mut_ptr().add(c) as *mut __m256i;
            _mm256_storeu_si256(p, _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256(p.add(1), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
        c += 16;
    }
}

/// A channel as rows of i32 lanes holding column pairs, and where the third tap's pair sits.
struct Rows<'a> {
    lanes: &'a [i32],
    row_len: usize,
    /// Lane offset of the pair whose low half is the third tap (2 at stride 1, 1 at stride 2).
    third: usize,
    stride: usize,
}

impl Rows<'_> {
    /// Panics unless `lanes`-wide vectors at every output column start (multiples of `lanes`)
    /// stay inside their rows and the plane; the kernels read unchecked after this.
    fn check_reads(&self, (oh, ow): (usize, usize), lanes: usize) {
        let last_x = (ow - 1) / lanes * lanes;
        let furthest = ((oh - 1) * self.stride + 2) * self.row_len + last_x + self.third + lanes;
        assert!(furthest <= self.lanes.len() && last_x + self.third + lanes <= self.row_len);
    }
}

/// One 3×3 channel: per output row and 8 columns, three rows × (one tap-pair `vpmaddwd` + one
/// single-tap `vpmaddwd`).
#[target_feature(enable = "avx2")]
fn channel_3x3(
    rows: &Rows,
    taps: &[i16; 9],
    (oh, ow): (usize, usize),
    row: RowRq,
    o: OutRq,
    dst: &mut [u8],
) {
    let pair =
        |lo: i16, hi: i16| _mm256_set1_epi32((lo as u16 as u32 | (hi as u16 as u32) << 16) as i32);
    let w01 = [0, 1, 2].map(|ky| pair(taps[ky * 3], taps[ky * 3 + 1]));
    let w2 = [0, 1, 2].map(|ky| pair(taps[ky * 3 + 2], 0));
    rows.check_reads((oh, ow), 8);
    let base = rows.lanes.as_ptr();
    for y in 0..oh {
        let line = |ky: usize| (y * rows.stride + ky) * rows.row_len;
        let r = [line(0), line(1), line(2)];
        let mut x = 0;
        while x < ow {
            let mut acc = _mm256_setzero_si256();
            for ky in 0..3 {
                // SAFETY: every lane read is inside the plane (`check_reads` above).
                let (a, b) = unsafe {
                    (
                        _mm256_loadu_si256(base.add(r[ky] + x) as *const __m256i),
                        _mm256_loadu_si256(base.add(r[ky] + x + rows.third) as *const __m256i),
                    )
                };
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, w01[ky]));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(b, w2[ky]));
            }
            let v = requant16([acc; 2], [row; 2], o);
            let out = &mut dst[y * ow + x..];
            if x + 8 <= ow {
                // SAFETY: `out` holds at least 8 bytes (x + 8 ≤ ow, inside row y).
                unsafe { _mm_storel_epi64(out.as_mut_ptr() as *mut __m128i, v) };
            } else {
                let mut bytes = [0u8; 16];
                // SAFETY: `bytes` is 16 long.
                unsafe { _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, v) };
                out[..ow - x].copy_from_slice(&bytes[..ow - x]);
            }
            x += 8;
        }
    }
}

/// Any other kernel size: one `vpmulld` per tap over a padded copy (stride 2 de-interleaved).
#[target_feature(enable = "avx2")]
fn generic(op: &Int8Conv2d, call: ConvCall, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    let ConvCall {
        n,
        c,
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        stride,
        pad,
    } = call;
    let ph = h + 2 * pad;
    // Widths with 8 values of slack, so the last vector of a row never reads past the row.
    let (row_len, odd_offset) = if stride == 1 {
        (w + 2 * pad + 8, 0)
    } else {
        let half = (w + 2 * pad).div_ceil(2) + 8;
        (2 * half, half)
    };
    let zp = input.qparams().zero_point as i16;
    let o = out_rq(rq);
    let plane_out = oh * ow;
    let weights = op.packed_weight();
    let threads = threads_for(c * plane_out * kh * kw);
    let block = c.div_ceil(threads).max(1);
    for b in 0..n {
        let image = &input.data()[b * c * h * w..][..c * h * w];
        let dst = &mut out[b * c * plane_out..][..c * plane_out];
        for_each_block(dst, block * plane_out, |index, chunk| {
            let mut padded = vec![0i16; (ph + 1) * row_len];
            let layout = PaddedPlane {
                data: &[],
                row_len,
                odd_offset,
                stride,
            };
            for (r, dst) in chunk.chunks_exact_mut(plane_out).enumerate() {
                let ch = index * block + r;
                let src = &image[ch * h * w..][..h * w];
                for (y, line) in src.chunks_exact(w).enumerate() {
                    let prow = &mut padded[(y + pad) * row_len..][..row_len];
                    for (x, &q) in line.iter().enumerate() {
                        let col = x + pad;
                        prow[layout.column(col / stride, col % stride)] = q as i16 - zp;
                    }
                }
                let taps = &weights[ch * kh * kw..][..kh * kw];
                let plane = PaddedPlane {
                    data: &padded,
                    ..layout
                };
                depthwise_channel(&plane, taps, [kh, kw], (oh, ow), row_rq(rq, ch), o, dst);
            }
        });
    }
}

/// One zero-padded i16 channel of a depthwise convolution: stride 1 keeps the padded rows as
/// they are; stride 2 stores each row's even columns, then its odd columns from `odd_offset`, so
/// that every tap of 8 neighbouring outputs is 8 contiguous values.
struct PaddedPlane<'a> {
    data: &'a [i16],
    row_len: usize,
    odd_offset: usize,
    stride: usize,
}

impl PaddedPlane<'_> {
    /// Where the tap `kx` of output column `x` sits in a row.
    fn column(&self, x: usize, kx: usize) -> usize {
        if self.stride == 1 {
            x + kx
        } else {
            // column 2x + kx: column x + kx/2 of the even (kx even) or odd (kx odd) half
            x + kx / 2 + (kx % 2) * self.odd_offset
        }
    }
}

/// One depthwise output channel, 8 pixels per vector.
#[target_feature(enable = "avx2")]
fn depthwise_channel(
    plane: &PaddedPlane,
    taps: &[i16],
    [kh, kw]: [usize; 2],
    (oh, ow): (usize, usize),
    row: RowRq,
    o: OutRq,
    dst: &mut [u8],
) {
    for y in 0..oh {
        let mut x = 0;
        while x < ow {
            let mut acc = _mm256_setzero_si256();
            for ky in 0..kh {
                let line = &plane.data[(y * plane.stride + ky) * plane.row_len..];
                for kx in 0..kw {
                    let src = &line[plane.column(x, kx)..][..8];
                    // SAFETY: src holds 8 i16 (the padded rows are 8 values wider than read).
                    let v = unsafe { _mm_loadu_si128(src.as_ptr() as *const __m128i) };
                    let prod = _mm256_mullo_epi32(
                        _mm256_cvtepi16_epi32(v),
                        _mm256_set1_epi32(taps[ky * kw + kx] as i32),
                    );
                    acc = _mm256_add_epi32(acc, prod);
                }
            }
            let v = requant16([acc; 2], [row; 2], o);
            let mut bytes = [0u8; 16];
            // SAFETY: bytes is 16 long.
            unsafe { _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, v) };
            let count = 8.min(ow - x);
            dst[y * ow + x..][..count].copy_from_slice(&bytes[..count]);
            x += 8;
        }
    }
}
