//! Portable fast convolution. Pointwise (1×1, ungrouped) convolutions — most of MobileNetV2's
//! work — are dot products over channels of a channels-last copy of the input with the
//! zero-point removed (contiguous i16 × i16 → i32, which LLVM vectorizes). Other convolutions
//! (depthwise, the 3×3 stem) run directly over a zero-padded copy with the zero-point removed
//! (so taps need no bounds checks), accumulating one output plane per output channel; inner
//! loops are contiguous for stride 1. Integer accumulation is exact, so the results are the
//! [`Reference`] kernels' bit for bit (`tests/it/int8_kernels.rs`); the
//! elementwise kernels are the reference ones.

use super::{ConvCall, Int8Kernels, Reference, for_each_block, threads_for};
use crate::int8::add::AddParams;
use crate::int8::conv::Int8Conv2d;
use crate::int8::linear::Int8Linear;
use crate::int8::pool::PoolParams;
use crate::int8::requant::Requant;
use crate::int8::tensor::QTensor;

/// The portable fast kernels (the default of the int8 layers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

/// `acc[j] += w · x[j·stride]` for every `j`.
#[inline]
fn axpy(acc: &mut [i32], w: i32, x: &[i16], stride: usize) {
    if stride == 1 {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a = a.wrapping_add(w * v as i32);
        }
    } else {
        for (a, &v) in acc.iter_mut().zip(x.iter().step_by(stride)) {
            *a = a.wrapping_add(w * v as i32);
        }
    }
}

/// `Σ a[i]·b[i]` in i32.
#[inline]
fn dot(a: &[i16], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .fold(0i32, |acc, (&x, &y)| acc.wrapping_add(x as i32 * y as i32))
}

/// A 1×1 ungrouped convolution without padding: for every output pixel, one dot product per
/// output channel over the input channels.
fn pointwise(op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
    let Some(ConvCall {
        n,
        c,
        h,
        w,
        oh,
        ow,
        stride,
        ..
    }) = ConvCall::of(op, input)
    else {
        return;
    };
    let oc = op.out_channels();
    let zp = input.qparams().zero_point as i16;
    let x = input.data();
    let wt = op.packed_weight();
    let mut pixels = vec![0i16; oh * ow * c];
    for b in 0..n {
        let image = &x[b * c * h * w..][..c * h * w];
        for ch in 0..c {
            let plane = &image[ch * h * w..][..h * w];
            for y in 0..oh {
                for xo in 0..ow {
                    let q = plane[(y * stride) * w + xo * stride];
                    pixels[(y * ow + xo) * c + ch] = q as i16 - zp;
                }
            }
        }
        let plane = oh * ow;
        let dst = &mut out[b * oc * plane..][..oc * plane];
        // Output channels split in as many blocks as threads; every block reads all pixels.
        let block = oc.div_ceil(threads_for(oc * plane * c)).max(1);
        let pixels = &pixels;
        for_each_block(dst, block * plane, |index, rows| {
            let first = index * block;
            for (p, pixel) in pixels.chunks_exact(c).enumerate() {
                for (r, weights) in wt[first * c..]
                    .chunks_exact(c)
                    .take(rows.len() / plane)
                    .enumerate()
                {
                    rows[r * plane + p] = rq.apply(first + r, dot(pixel, weights));
                }
            }
        });
    }
}

impl Int8Kernels for Direct {
    fn conv2d(&self, op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        let spec = op.spec();
        if op.kernel_size() == [1, 1] && spec.padding == 0 && spec.groups == 1 {
            return pointwise(op, rq, input, out);
        }
        let Some(ConvCall {
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
        }) = ConvCall::of(op, input)
        else {
            return;
        };
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let oc = op.out_channels();
        let icg = c / spec.groups;
        let ocg = oc / spec.groups;
        let zp = input.qparams().zero_point as i16;
        let x = input.data();
        let wt = op.packed_weight();
        let taps = icg * kh * kw;
        let mut padded = vec![0i16; c * ph * pw];
        let plane_out = oh * ow;
        let block = oc.div_ceil(threads_for(oc * plane_out * taps)).max(1);
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    let src = &x[((b * c + ch) * h + y) * w..][..w];
                    let dst = &mut padded[(ch * ph + y + pad) * pw + pad..][..w];
                    for (d, &q) in dst.iter_mut().zip(src) {
                        *d = q as i16 - zp;
                    }
                }
            }
            let padded = &padded;
            let dst = &mut out[b * oc * plane_out..][..oc * plane_out];
            for_each_block(dst, block * plane_out, |index, rows| {
                let mut acc = vec![0i32; plane_out];
                for (r, dst) in rows.chunks_exact_mut(plane_out).enumerate() {
                    let o = index * block + r;
                    let g = o / ocg;
                    acc.fill(0);
                    for (t, &wv) in wt[o * taps..(o + 1) * taps].iter().enumerate() {
                        if wv == 0 {
                            continue;
                        }
                        let (i, ky, kx) = (t / (kh * kw), (t / kw) % kh, t % kw);
                        let plane = &padded[(g * icg + i) * ph * pw..][..ph * pw];
                        for (y, row) in acc.chunks_exact_mut(ow).enumerate() {
                            let start = (y * stride + ky) * pw + kx;
                            axpy(row, wv as i32, &plane[start..], stride);
                        }
                    }
                    for (d, &a) in dst.iter_mut().zip(&acc) {
                        *d = rq.apply(o, a);
                    }
                }
            });
        }
    }

    fn linear(&self, op: &Int8Linear, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        Reference.linear(op, rq, input, out)
    }

    fn add(&self, p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]) {
        Reference.add(p, a, b, out)
    }

    fn global_avg_pool(&self, p: &PoolParams, input: &QTensor, out: &mut [u8]) {
        Reference.global_avg_pool(p, input, out)
    }
}
