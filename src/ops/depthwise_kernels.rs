//! Depthwise 2-D convolution on contiguous NCHW `f32` slices: forward, input gradient and weight
//! gradient, the three halves of `torch.nn.functional.conv2d(..., groups=C)`'s training step.
//!
//! With `y[n,c,oh,ow] = Σ_{kh,kw} x[n,c,oh·sh+kh−ph, ow·sw+kw−pw] · w[c,kh,kw]` (taps outside
//! the input read zero):
//! - `∂L/∂x[n,c,ih,iw] = Σ_{(oh,kh,ow,kw) → (ih,iw)} g[n,c,oh,ow] · w[c,kh,kw]`,
//! - `∂L/∂w[c,kh,kw] = Σ_{n,oh,ow} g[n,c,oh,ow] · x[n,c,oh·sh+kh−ph, ow·sw+kw−pw]`.
//!
//! MobileNetV2's depthwise planes are small (16×16 down to 1×1 at 32×32 inputs), so per-row
//! loops spend their time on bookkeeping. Instead each channel (rayon over channels) gathers its
//! `N` planes, zero-padded, into one buffer; in that layout a tap `(kh, kw)` is a constant offset
//! `kh·Wp + kw`, and the stride-1 convolution of all `N` planes is one long `y += w·x` per tap.
//! Strided outputs are read off the stride-1 grid (the positions in between are computed and
//! dropped); the input gradient scatters the output gradient onto that grid and runs the
//! transposed taps; each weight gradient is one long dot product. Burn's generic path runs one
//! GEMM (and an im2col/col2im pass) per channel instead.

use rayon::prelude::*;

use super::lanes::lane_sum;
use super::simd::dispatch_avx2;

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

/// One channel's padded layout: `N` planes of `hp × wp`, the input at `(ph, pw)`.
struct Grid {
    hp: usize,
    wp: usize,
    /// Stride-1 positions computed per tap: every output lies below it, and `len + offset(tap)`
    /// stays inside the buffer.
    len: usize,
}

impl DepthwiseGeometry {
    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    fn grid(&self) -> Grid {
        let side = |d: usize| {
            (self.input[d] + self.padding[d])
                .max((self.output[d].max(1) - 1) * self.stride[d] + self.kernel[d])
        };
        let (hp, wp) = (side(0), side(1));
        let reach = (self.kernel[0] - 1) * wp + self.kernel[1] - 1;
        Grid {
            hp,
            wp,
            len: (self.batch * hp * wp).saturating_sub(reach),
        }
    }

    /// Buffer offset of tap `t` (row-major over the kernel).
    fn tap_offset(&self, grid: &Grid, t: usize) -> usize {
        (t / self.kernel[1]) * grid.wp + t % self.kernel[1]
    }

    /// Grid position of output `(n, oh, ow)`.
    fn output_at(&self, grid: &Grid, n: usize, oh: usize, ow: usize) -> usize {
        n * grid.hp * grid.wp + oh * self.stride[0] * grid.wp + ow * self.stride[1]
    }

    /// Calls `f(grid position of (n, oh, 0), row index)` for every output row of one channel
    /// (`n, oh` in order); the row's outputs sit `stride[1]` apart on the grid.
    fn for_each_output_row(&self, grid: &Grid, mut f: impl FnMut(usize, usize)) {
        for n in 0..self.batch {
            for oh in 0..self.output[0] {
                f(self.output_at(grid, n, oh, 0), n * self.output[0] + oh);
            }
        }
    }

    /// Channel `c` of an NCHW tensor, zero-padded into the grid layout.
    fn gather_padded(&self, grid: &Grid, x: &[f32], c: usize) -> Vec<f32> {
        let [h, w] = self.input;
        let mut buf = vec![0.0; self.batch * grid.hp * grid.wp];
        for n in 0..self.batch {
            let plane = &x[(n * self.channels + c) * h * w..][..h * w];
            for (ih, row) in plane.chunks_exact(w.max(1)).enumerate() {
                let at = n * grid.hp * grid.wp + (ih + self.padding[0]) * grid.wp + self.padding[1];
                buf[at..at + w].copy_from_slice(row);
            }
        }
        buf
    }

    /// The output gradient of channel `c` placed on the grid (zero elsewhere), `len` long.
    fn scatter_output(&self, grid: &Grid, dy: &[f32], c: usize) -> Vec<f32> {
        let [oh, ow] = self.output;
        let mut buf = vec![0.0; grid.len];
        self.for_each_output_row(grid, |at, row| {
            let (n, r) = (row / oh, row % oh);
            let src = &dy[((n * self.channels + c) * oh + r) * ow..][..ow];
            for (dst, &v) in buf[at..].iter_mut().step_by(self.stride[1]).zip(src) {
                *dst = v;
            }
        });
        buf
    }

    /// Writes channel-major results (`[C][N·plane]`) into an NCHW tensor.
    fn write_nchw(&self, per_channel: Vec<Vec<f32>>, plane: usize, out: &mut [f32]) {
        out.par_chunks_mut(plane.max(1))
            .enumerate()
            .for_each(|(i, out)| {
                let (n, c) = (i / self.channels, i % self.channels);
                out.copy_from_slice(&per_channel[c][n * plane..][..plane]);
            });
    }
}

/// `y = depthwise_conv2d(x, w)`; `x` is `[N, C, H, W]`, `w` is `[C, 1, KH, KW]`, `y` is
/// `[N, C, OH, OW]` and is overwritten.
pub fn forward(g: &DepthwiseGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    let per_channel = (0..g.channels)
        .into_par_iter()
        .map(|c| forward_channel(g, x, &w[c * g.taps()..][..g.taps()], c))
        .collect();
    g.write_nchw(per_channel, g.output[0] * g.output[1], y);
}

dispatch_avx2! {
    /// Channel `c` of [`forward`], as `[N, OH, OW]`.
    fn forward_channel / forward_channel_portable(
        g: &DepthwiseGeometry,
        x: &[f32],
        w: &[f32],
        c: usize,
    ) -> Vec<f32> {
        let grid = g.grid();
        let xp = g.gather_padded(&grid, x, c);
        let mut full = vec![0.0; grid.len];
        for (t, &tap) in w.iter().enumerate() {
            let off = g.tap_offset(&grid, t);
            axpy(tap, &xp[off..off + grid.len], &mut full);
        }
        let ow = g.output[1];
        let mut out = vec![0.0; g.batch * g.output[0] * ow];
        g.for_each_output_row(&grid, |at, row| {
            let dst = &mut out[row * ow..][..ow];
            for (d, &v) in dst.iter_mut().zip(full[at..].iter().step_by(g.stride[1])) {
                *d = v;
            }
        });
        out
    }
}

/// Both gradients from the output gradient `dy`: `dx` (`[N, C, H, W]`) and `dw`
/// (`[C, 1, KH, KW]`), both overwritten. One pass per channel places `dy` on the grid once for
/// the two of them.
pub fn backward(
    g: &DepthwiseGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let per_channel = dw
        .par_chunks_mut(g.taps())
        .enumerate()
        .map(|(c, dw)| backward_channel(g, x, &w[c * g.taps()..][..g.taps()], dy, c, dw))
        .collect();
    g.write_nchw(per_channel, g.input[0] * g.input[1], dx);
}

dispatch_avx2! {
    /// Channel `c` of [`backward`]: writes its taps' `dw` and returns its `dx` as `[N, H, W]`.
    fn backward_channel / backward_channel_portable(
        g: &DepthwiseGeometry,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        c: usize,
        dw: &mut [f32],
    ) -> Vec<f32> {
        let grid = g.grid();
        let dyp = g.scatter_output(&grid, dy, c);
        let xp = g.gather_padded(&grid, x, c);
        let mut dxp = vec![0.0; xp.len()];
        for (t, (&tap, dw)) in w.iter().zip(dw.iter_mut()).enumerate() {
            let off = g.tap_offset(&grid, t);
            axpy(tap, &dyp, &mut dxp[off..off + grid.len]);
            *dw = lane_sum(&dyp, &xp[off..off + grid.len], |a, b| a * b) as f32;
        }
        let [h, wd] = g.input;
        let mut out = Vec::with_capacity(g.batch * h * wd);
        for n in 0..g.batch {
            for ih in 0..h {
                let at = n * grid.hp * grid.wp + (ih + g.padding[0]) * grid.wp + g.padding[1];
                out.extend_from_slice(&dxp[at..at + wd]);
            }
        }
        out
    }
}

/// `y[i] += a · x[i]`.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The geometries the depthwise kernel tests sweep: strides, odd and non-square sides,
/// asymmetric padding and planes smaller than the kernel. Each row: N, C, H, W, KH, KW, stride
/// h/w, leading padding h/w, trailing padding h/w.
#[cfg(test)]
pub(super) const TEST_GEOMETRIES: [[usize; 12]; 5] = [
    [2, 3, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1],
    [2, 2, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1],
    [1, 2, 2, 3, 3, 3, 2, 1, 1, 1, 1, 1],
    [3, 2, 6, 5, 5, 3, 1, 2, 2, 0, 1, 2],
    [1, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1],
];

/// A [`TEST_GEOMETRIES`]-style row as a geometry (the output size from both paddings).
#[cfg(test)]
pub(super) fn test_geometry(row: [usize; 12]) -> DepthwiseGeometry {
    let [n, c, h, w, kh, kw, sh, sw, ph, pw, th, tw] = row;
    DepthwiseGeometry {
        batch: n,
        channels: c,
        input: [h, w],
        output: [(h + ph + th - kh) / sh + 1, (w + pw + tw - kw) / sw + 1],
        kernel: [kh, kw],
        stride: [sh, sw],
        padding: [ph, pw],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels against the formulas in the module docs, evaluated term by term, over
    /// strides, odd and non-square sides, asymmetric padding and planes smaller than the kernel.
    #[test]
    fn kernels_match_the_definition() {
        for row in TEST_GEOMETRIES {
            let [n, c, h, w, kh, kw, sh, sw, ph, pw, _, _] = row;
            let g = test_geometry(row);
            let output = g.output;
            let val =
                |i: usize, k: u32| ((i as u32).wrapping_mul(2_654_435_761 ^ k) % 17) as f32 - 8.0;
            let x: Vec<f32> = (0..n * c * h * w).map(|i| val(i, 1)).collect();
            let wt: Vec<f32> = (0..c * kh * kw).map(|i| val(i, 2)).collect();
            let dy: Vec<f32> = (0..n * c * output[0] * output[1])
                .map(|i| val(i, 3))
                .collect();
            let (mut y, mut want_y) = (vec![0.0; dy.len()], vec![0.0; dy.len()]);
            let (mut dx, mut want_dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let (mut dw, mut want_dw) = (vec![0.0; wt.len()], vec![0.0; wt.len()]);
            for (b, ch, oh, ow, a, bb) in (0..n).flat_map(|b| {
                (0..c).flat_map(move |ch| {
                    (0..output[0]).flat_map(move |oh| {
                        (0..output[1]).flat_map(move |ow| {
                            (0..kh).flat_map(move |a| (0..kw).map(move |bb| (b, ch, oh, ow, a, bb)))
                        })
                    })
                })
            }) {
                let (ih, iw) = (
                    (oh * sh + a) as isize - ph as isize,
                    (ow * sw + bb) as isize - pw as isize,
                );
                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                    continue;
                }
                let xi = ((b * c + ch) * h + ih as usize) * w + iw as usize;
                let yi = ((b * c + ch) * output[0] + oh) * output[1] + ow;
                let wi = (ch * kh + a) * kw + bb;
                want_y[yi] += x[xi] * wt[wi];
                want_dx[xi] += dy[yi] * wt[wi];
                want_dw[wi] += dy[yi] * x[xi];
            }
            forward(&g, &x, &wt, &mut y);
            backward(&g, &x, &wt, &dy, &mut dx, &mut dw);
            // Small integers: every sum is exact, whatever the order.
            assert_eq!(y, want_y, "y {g:?}");
            assert_eq!(dx, want_dx, "dx {g:?}");
            assert_eq!(dw, want_dw, "dw {g:?}");
        }
    }

    /// The dispatched (AVX2 where the CPU has it) and the portable builds of the channel
    /// kernels agree bit for bit on non-integer data, where summation order would show.
    #[test]
    fn dispatched_channel_kernels_match_the_portable_build_bit_for_bit() {
        for (n, c, side, stride) in [(3, 2, 9, 1), (2, 3, 8, 2), (1, 2, 17, 2)] {
            let output = (side + 2 - 3) / stride + 1;
            let g = DepthwiseGeometry {
                batch: n,
                channels: c,
                input: [side, side],
                output: [output, output],
                kernel: [3, 3],
                stride: [stride, stride],
                padding: [1, 1],
            };
            let val = |i: usize, k: u32| {
                ((i as u32).wrapping_mul(2_654_435_761 ^ k) >> 8) as f32 * 1.7e-7 - 1.3
            };
            let x: Vec<f32> = (0..n * c * side * side).map(|i| val(i, 1)).collect();
            let w: Vec<f32> = (0..c * 9).map(|i| val(i, 2)).collect();
            let dy: Vec<f32> = (0..n * c * output * output).map(|i| val(i, 3)).collect();
            for ch in 0..c {
                let taps = &w[ch * 9..][..9];
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&forward_channel(&g, &x, taps, ch)),
                    bits(&forward_channel_portable(&g, &x, taps, ch)),
                    "forward {g:?} channel {ch}"
                );
                let (mut dw, mut dw_portable) = ([0.0; 9], [0.0; 9]);
                let dx = backward_channel(&g, &x, taps, &dy, ch, &mut dw);
                let dx_portable =
                    backward_channel_portable(&g, &x, taps, &dy, ch, &mut dw_portable);
                assert_eq!(bits(&dx), bits(&dx_portable), "dx {g:?} channel {ch}");
                assert_eq!(bits(&dw), bits(&dw_portable), "dw {g:?} channel {ch}");
            }
        }
    }
}
