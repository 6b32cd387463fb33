//! Portable reference kernels: plain loops over NCHW data, exact integer accumulation, the
//! per-element arithmetic of [`Requant::apply`], [`AddParams::apply`] and [`PoolParams::apply`].

use super::{ConvCall, Int8Kernels};
use crate::int8::add::AddParams;
use crate::int8::conv::Int8Conv2d;
use crate::int8::linear::Int8Linear;
use crate::int8::pool::PoolParams;
use crate::int8::requant::Requant;
use crate::int8::tensor::{MemoryFormat, QTensor};

/// The portable reference kernels (no `unsafe`, no SIMD, single thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reference;

impl Int8Kernels for Reference {
    fn conv2d(&self, op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
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
        let spec = op.spec();
        let (stride, pad) = (stride as isize, pad as isize);
        let oc = op.out_channels();
        let icg = c / spec.groups;
        let ocg = oc / spec.groups;
        let zp = input.qparams().zero_point;
        let x = input.data();
        let wt = op.packed_weight();
        for b in 0..n {
            for o in 0..oc {
                let g = o / ocg;
                let w_o = &wt[o * icg * kh * kw..(o + 1) * icg * kh * kw];
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = 0i32;
                        for i in 0..icg {
                            let plane = &x[((b * c) + g * icg + i) * h * w..][..h * w];
                            for ky in 0..kh {
                                let iy = y as isize * stride + ky as isize - pad;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = xo as isize * stride + kx as isize - pad;
                                    if ix < 0 || ix >= w as isize {
                                        continue;
                                    }
                                    let q = plane[iy as usize * w + ix as usize] as i32 - zp;
                                    let wv = w_o[(i * kh + ky) * kw + kx] as i32;
                                    acc = acc.wrapping_add(q * wv);
                                }
                            }
                        }
                        out[((b * oc + o) * oh + y) * ow + xo] = rq.apply(o, acc);
                    }
                }
            }
        }
    }

    fn linear(&self, op: &Int8Linear, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        let (k, m) = (op.in_features(), op.out_features());
        let zp = input.qparams().zero_point;
        let wt = op.packed_weight();
        for (row, out_row) in input.data().chunks_exact(k).zip(out.chunks_exact_mut(m)) {
            for (o, y) in out_row.iter_mut().enumerate() {
                let acc = row
                    .iter()
                    .zip(&wt[o * k..(o + 1) * k])
                    .fold(0i32, |acc, (&q, &wv)| {
                        acc.wrapping_add((q as i32 - zp) * wv as i32)
                    });
                *y = rq.apply(o, acc);
            }
        }
    }

    fn add(&self, p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]) {
        for ((y, &qa), &qb) in out.iter_mut().zip(a).zip(b) {
            *y = p.apply(qa, qb);
        }
    }

    fn global_avg_pool(&self, p: &PoolParams, input: &QTensor, out: &mut [u8]) {
        let s = input.shape();
        let (c, hw) = (s[1], s[2] * s[3]);
        if input.format() == MemoryFormat::Contiguous {
            for (plane, y) in input.data().chunks_exact(hw).zip(out.iter_mut()) {
                let sum: i64 = plane.iter().map(|&q| q as i64).sum();
                *y = p.apply(sum);
            }
            return;
        }
        // Channels-last: each image's pixels added channel by channel into u32 sums (exact
        // for 2^24 pixels of 255), in runs of that many pixels carried into i64.
        const RUN: usize = 1 << 24;
        let mut sums = vec![0i64; c];
        let mut run = vec![0u32; c];
        for (image, y) in input
            .data()
            .chunks_exact(c * hw)
            .zip(out.chunks_exact_mut(c))
        {
            sums.fill(0);
            for pixels in image.chunks(c * RUN) {
                run.fill(0);
                for px in pixels.chunks_exact(c) {
                    for (r, &q) in run.iter_mut().zip(px) {
                        *r += q as u32;
                    }
                }
                for (s, &r) in sums.iter_mut().zip(&run) {
                    *s += r as i64;
                }
            }
            for (y, &sum) in y.iter_mut().zip(&sums) {
                *y = p.apply(sum);
            }
        }
    }
}
