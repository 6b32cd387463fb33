//! Depthwise 2-D convolution on contiguous NCHW `f32` slices: forward, input gradient and weight
//! gradient, the three halves of `torch.nn.functional.conv2d(..., groups=C)`'s training step.
//!
//! Each channel plane is independent, so the kernels work plane by plane (rayon over planes) and
//! the inner loops run along an output row, where stride 1 makes them contiguous `a += w * b`
//! updates the compiler vectorises. Burn's generic path instead runs one GEMM (and, for the
//! gradients, one im2col/col2im pass) per channel, which is what made depthwise layers the slowest
//! part of a MobileNetV2 training step on the CPU.
//!
//! With `y[n,c,oh,ow] = Σ_{kh,kw} x[n,c,oh·sh+kh−ph, ow·sw+kw−pw] · w[c,kh,kw]` (taps outside
//! the input read zero):
//! - `∂L/∂x[n,c,ih,iw] = Σ_{(oh,kh,ow,kw) → (ih,iw)} g[n,c,oh,ow] · w[c,kh,kw]`,
//! - `∂L/∂w[c,kh,kw] = Σ_{n,oh,ow} g[n,c,oh,ow] · x[n,c,oh·sh+kh−ph, ow·sw+kw−pw]`.

use rayon::prelude::*;

use super::lanes::lane_sum;

/// The geometry of one depthwise convolution (`groups == in_channels == out_channels`,
/// dilation 1): shapes, kernel, stride and the leading (top, left) padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    /// Batch size.
    pub batch: usize,
    /// Channels (in = out).
    pub channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding before the first row and column (the trailing padding only shapes `output`).
    pub padding: [usize; 2],
}

impl DepthwiseGeometry {
    fn input_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn output_plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// The input row read by output row `o` at kernel row `k`, if it is inside the input.
    fn input_row(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[0] + k)
            .checked_sub(self.padding[0])
            .filter(|&i| i < self.input[0])
    }

    /// The output columns `lo..hi` whose kernel column `k` lands inside the input, and the
    /// input column of `lo`; `None` when there are none.
    fn column_span(&self, k: usize) -> Option<(usize, usize, usize)> {
        let (s, p, w) = (self.stride[1], self.padding[1], self.input[1]);
        // First output column with ow·s + k ≥ p.
        let lo = p.saturating_sub(k).div_ceil(s);
        // One past the last output column with ow·s + k − p ≤ w − 1.
        let hi = if w + p > k {
            ((w + p - k - 1) / s + 1).min(self.output[1])
        } else {
            0
        };
        (lo < hi).then(|| (lo, hi, lo * s + k - p))
    }
}

/// `y = depthwise_conv2d(x, w)`; `x` is `[N, C, H, W]`, `w` is `[C, 1, KH, KW]`, `y` is
/// `[N, C, OH, OW]` and is overwritten.
pub fn forward(g: &DepthwiseGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (ip, op, ow) = (g.input_plane(), g.output_plane(), g.output[1]);
    y.par_chunks_mut(op).enumerate().for_each(|(plane, y)| {
        let c = plane % g.channels;
        let x = &x[plane * ip..(plane + 1) * ip];
        let w = &w[c * g.taps()..(c + 1) * g.taps()];
        y.fill(0.0);
        for (oh, y_row) in y.chunks_exact_mut(ow).enumerate() {
            for kh in 0..g.kernel[0] {
                let Some(ih) = g.input_row(oh, kh) else {
                    continue;
                };
                let x_row = &x[ih * g.input[1]..(ih + 1) * g.input[1]];
                for kw in 0..g.kernel[1] {
                    let tap = w[kh * g.kernel[1] + kw];
                    let Some((lo, hi, iw)) = g.column_span(kw) else {
                        continue;
                    };
                    axpy_strided(tap, &x_row[iw..], g.stride[1], &mut y_row[lo..hi]);
                }
            }
        }
    });
}

/// `dx` from the output gradient `dy`; `dx` (`[N, C, H, W]`) is overwritten.
pub fn input_grad(g: &DepthwiseGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (ip, op, ow) = (g.input_plane(), g.output_plane(), g.output[1]);
    dx.par_chunks_mut(ip).enumerate().for_each(|(plane, dx)| {
        let c = plane % g.channels;
        let dy = &dy[plane * op..(plane + 1) * op];
        let w = &w[c * g.taps()..(c + 1) * g.taps()];
        dx.fill(0.0);
        for (oh, dy_row) in dy.chunks_exact(ow).enumerate() {
            for kh in 0..g.kernel[0] {
                let Some(ih) = g.input_row(oh, kh) else {
                    continue;
                };
                let dx_row = &mut dx[ih * g.input[1]..(ih + 1) * g.input[1]];
                for kw in 0..g.kernel[1] {
                    let tap = w[kh * g.kernel[1] + kw];
                    let Some((lo, hi, iw)) = g.column_span(kw) else {
                        continue;
                    };
                    scatter_strided(tap, &dy_row[lo..hi], g.stride[1], &mut dx_row[iw..]);
                }
            }
        }
    });
}

/// `dw` (`[C, 1, KH, KW]`, overwritten) from the output gradient `dy` and the input `x`.
pub fn weight_grad(g: &DepthwiseGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (ip, op, ow) = (g.input_plane(), g.output_plane(), g.output[1]);
    dw.par_chunks_mut(g.taps()).enumerate().for_each(|(c, dw)| {
        let mut sums = vec![0.0f64; g.taps()];
        // The strided input columns of one row, gathered so the dot product is contiguous.
        let mut gathered = Vec::with_capacity(ow);
        for n in 0..g.batch {
            let plane = n * g.channels + c;
            let x = &x[plane * ip..(plane + 1) * ip];
            let dy = &dy[plane * op..(plane + 1) * op];
            for kh in 0..g.kernel[0] {
                for kw in 0..g.kernel[1] {
                    let Some((lo, hi, iw)) = g.column_span(kw) else {
                        continue;
                    };
                    for (oh, dy_row) in dy.chunks_exact(ow).enumerate() {
                        let Some(ih) = g.input_row(oh, kh) else {
                            continue;
                        };
                        let x_row = &x[ih * g.input[1] + iw..(ih + 1) * g.input[1]];
                        let x_row = if g.stride[1] == 1 {
                            x_row
                        } else {
                            gathered.clear();
                            gathered.extend(x_row.iter().step_by(g.stride[1]).take(hi - lo));
                            &gathered
                        };
                        sums[kh * g.kernel[1] + kw] += lane_sum(&dy_row[lo..hi], x_row, |a, b| a * b);
                    }
                }
            }
        }
        for (dw, s) in dw.iter_mut().zip(sums) {
            *dw = s as f32;
        }
    });
}

/// `y[i] += a · x[i·stride]`.
fn axpy_strided(a: f32, x: &[f32], stride: usize, y: &mut [f32]) {
    if stride == 1 {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    } else {
        for (y, x) in y.iter_mut().zip(x.iter().step_by(stride)) {
            *y += a * x;
        }
    }
}

/// `y[i·stride] += a · x[i]`.
fn scatter_strided(a: f32, x: &[f32], stride: usize, y: &mut [f32]) {
    if stride == 1 {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    } else {
        for (y, x) in y.iter_mut().step_by(stride).zip(x) {
            *y += a * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column span agrees with the direct definition for every kernel column.
    #[test]
    fn column_span_matches_definition() {
        for (w, k, s, p) in [(7, 3, 1, 1), (7, 3, 2, 1), (8, 3, 2, 1), (5, 5, 1, 2), (4, 3, 2, 0)] {
            let out = (w + 2 * p - k) / s + 1;
            let g = DepthwiseGeometry {
                batch: 1,
                channels: 1,
                input: [1, w],
                output: [1, out],
                kernel: [1, k],
                stride: [1, s],
                padding: [0, p],
            };
            for kw in 0..k {
                let inside: Vec<usize> = (0..out)
                    .filter(|&o| (o * s + kw) >= p && o * s + kw - p < w)
                    .collect();
                match g.column_span(kw) {
                    Some((lo, hi, iw)) => {
                        assert_eq!((lo..hi).collect::<Vec<_>>(), inside, "w {w} k {k} s {s} p {p}");
                        assert_eq!(iw, lo * s + kw - p);
                    }
                    None => assert!(inside.is_empty(), "w {w} k {k} s {s} p {p}"),
                }
            }
        }
    }
}
