//! The inference (forward-only) dense convolution with its [`Epilogue`], on contiguous NCHW
//! `f32` slices: `y[n] = epilogue(W · im2col(x[n]))` with `W` the `[C_out, C_in·KH·KW]` weight,
//! PyTorch's `conv2d(x, w)` (groups 1) followed by batch norm and ReLU/ReLU6.
//!
//! Burn's flex convolution converts the whole input to NHWC, gathers `[positions, taps]` tiles,
//! multiplies, then scatters the product back to NCHW; the bias, batch norm and activation follow
//! as passes of their own. Here the columns are gathered straight from NCHW as
//! `[C_in·KH·KW, positions]` rows (a 1×1 stride-1 convolution reads the input itself), the
//! product is written by `gemm` (the crate Burn's flex backend multiplies with, its AVX-512
//! kernels where the CPU has them) into its place in the output, and the epilogue runs on that
//! tile while it is in cache. Tasks are (image, tile of output positions, block of output
//! channels): enough of them for every thread at batch 1 too.
//!
//! The sums run in `gemm`'s order (blocked, fused multiply-add), not PyTorch's: equal to it
//! within `f32` rounding, which the model tests hold to PyTorch's logits.

use rayon::prelude::*;

use super::epilogue::Epilogue;

/// The geometry of one dense convolution (groups 1, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
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

/// Gathered column values per tile at most (128 KiB of `f32`): the tile stays in L2 between
/// gathering it and multiplying it.
const TILE_VALUES: usize = 1 << 15;

impl ConvGeometry {
    /// Rows of the gathered columns: `C_in · KH · KW`.
    fn depth(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    fn positions(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Whether the input is its own column matrix (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Output positions per tile: a multiple of 16 (the widest vector), at least 64.
    fn tile(&self) -> usize {
        let by_cache = (TILE_VALUES / self.depth().max(1)) / 16 * 16;
        by_cache.max(64).min(self.positions().max(1))
    }

    /// Gathers the columns of positions `start..start + cols.len() / depth` of image `x`
    /// (`[C_in, H, W]`) as `[depth, len]` rows: `cols[(ci·KH + i)·KW + j][p] = x[ci, oh·sh + i −
    /// ph, ow·sw + j − pw]`, zero outside the input.
    #[inline(never)]
    fn gather(&self, x: &[f32], start: usize, len: usize, cols: &mut [f32]) {
        let ([h, w], [_, ow], [kh, kw], [sh, sw], [ph, pw]) = (
            self.input,
            self.output,
            self.kernel,
            self.stride,
            self.padding,
        );
        for (k, row) in cols.chunks_exact_mut(len).enumerate() {
            let (ci, i, j) = (k / (kh * kw), k / kw % kh, k % kw);
            let plane = &x[ci * h * w..][..h * w];
            let mut p = start;
            let mut row = &mut row[..];
            while !row.is_empty() {
                let (r, c0) = (p / ow, p % ow);
                let n = (ow - c0).min(row.len());
                let (seg, rest) = row.split_at_mut(n);
                match (r * sh + i).checked_sub(ph).filter(|&ih| ih < h) {
                    None => seg.fill(0.0),
                    Some(ih) => {
                        let src = &plane[ih * w..][..w];
                        // Output columns c whose input column c·sw + j − pw lies in [0, w).
                        let first = pw.saturating_sub(j).div_ceil(sw);
                        let end = (w + pw).saturating_sub(j).div_ceil(sw);
                        let lo = first.saturating_sub(c0).min(n);
                        let hi = end.saturating_sub(c0).clamp(lo, n);
                        seg[..lo].fill(0.0);
                        seg[hi..].fill(0.0);
                        if lo == hi {
                            // No output column of this segment reads inside the input.
                        } else if sw == 1 {
                            let from = c0 + lo + j - pw;
                            seg[lo..hi].copy_from_slice(&src[from..from + hi - lo]);
                        } else {
                            let from = (c0 + lo) * sw + j - pw;
                            let src = src[from..].iter().step_by(sw);
                            for (d, &v) in seg[lo..hi].iter_mut().zip(src) {
                                *d = v;
                            }
                        }
                    }
                }
                p += n;
                row = rest;
            }
        }
    }
}

/// `y = epilogue(conv2d(x, w))`; `x` is `[N, C_in, H, W]`, `w` is `[C_out, C_in, KH, KW]`,
/// `y` is `[N, C_out, OH, OW]` and is overwritten.
///
/// # Panics
/// If a slice's length or the epilogue's channel count does not match `g`.
pub fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], e: &Epilogue, y: &mut [f32]) {
    let ([h, wd], positions, depth) = (g.input, g.positions(), g.depth());
    assert_eq!(x.len(), g.batch * g.in_channels * h * wd, "input size");
    assert_eq!(w.len(), g.out_channels * depth, "weight size");
    assert_eq!(y.len(), g.batch * g.out_channels * positions, "output size");
    assert_eq!(e.channels(), g.out_channels, "epilogue channels");
    if y.is_empty() {
        return;
    }
    if !g.is_pointwise() && super::conv_grid::pays(g) {
        return super::conv_grid::forward(g, x, w, e, y);
    }
    let tile = g.tile();
    let tiles = positions.div_ceil(tile);
    // Output-channel blocks: enough tasks for every thread, blocks of 16 rows at least.
    let threads = rayon::current_num_threads();
    let blocks = (2 * threads)
        .div_ceil(g.batch * tiles)
        .min(g.out_channels.div_ceil(16))
        .max(1);
    let block = g.out_channels.div_ceil(blocks);
    let out = OutPtr(y.as_mut_ptr());
    // Each worker's column buffer, kept from task to task (`gather` writes all of it).
    let tasks = (0..g.batch * tiles).into_par_iter();
    tasks.for_each_init(Vec::new, |buf: &mut Vec<f32>, task| {
        let (n, t) = (task / tiles, task % tiles);
        let start = t * tile;
        let len = tile.min(positions - start);
        let image = &x[n * g.in_channels * h * wd..][..g.in_channels * h * wd];
        let (cols, col_stride) = if g.is_pointwise() {
            (&image[start..], positions)
        } else {
            buf.resize(depth * len, 0.0);
            g.gather(image, start, len, &mut buf[..depth * len]);
            (&buf[..depth * len], len)
        };
        (0..g.out_channels)
            .into_par_iter()
            .step_by(block)
            .for_each(|c0| {
                let rows = block.min(g.out_channels - c0);
                let first = (n * g.out_channels + c0) * positions + start;
                // SAFETY: `w` holds rows `c0..c0 + rows` of `depth` values; `cols` holds `depth`
                // rows of `len` values `col_stride` apart; the destination is rows
                // `c0..c0 + rows` of image `n`, positions `start..start + len`, `positions`
                // apart, inside `y` (sizes asserted above), and no other task writes there.
                unsafe {
                    gemm::gemm(
                        rows,
                        len,
                        depth,
                        out.at(first),
                        1,
                        positions as isize,
                        false,
                        w[c0 * depth..].as_ptr(),
                        1,
                        depth as isize,
                        cols.as_ptr(),
                        1,
                        col_stride as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for c in c0..c0 + rows {
                    // SAFETY: as above, this task's own row segment.
                    let seg = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.at((n * g.out_channels + c) * positions + start),
                            len,
                        )
                    };
                    e.apply(c, seg);
                }
            });
    });
}

/// The output buffer, shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);

// SAFETY: tasks write disjoint ranges (see `forward`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(super) fn at(self, i: usize) -> *mut f32 {
        // SAFETY: callers stay inside the buffer (see `forward`).
        unsafe { self.0.add(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(i: usize, k: u32) -> f32 {
        ((i as u32).wrapping_mul(2_654_435_761 ^ k) % 17) as f32 * 0.25 - 2.0
    }

    /// Both paths against the definition, in `f64`, over strides, padding, 1×1 (the pointwise
    /// path and strided ones), tiles that end inside output rows, and channel counts that
    /// leave a short last block. Products of quarter-integers sum exactly in `f32` here, so the
    /// order of the sums does not matter and the results are equal.
    #[test]
    fn matches_the_definition() {
        let geometries = [
            // N, C_in, C_out, H, W, KH, KW, sh, sw, ph, pw, trailing h, w
            [2, 3, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1],
            [1, 4, 17, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1],
            [2, 6, 9, 9, 11, 1, 1, 1, 1, 0, 0, 0, 0],
            [1, 5, 33, 8, 8, 1, 1, 2, 2, 0, 0, 0, 0],
            [1, 3, 8, 23, 19, 7, 7, 2, 2, 3, 3, 3, 3],
            [1, 40, 70, 13, 13, 3, 3, 1, 1, 1, 1, 1, 1],
            [3, 2, 4, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1],
            // On the grid (`conv_grid`): stride 1 and 2, 1×1 stride 2, a kernel wider than two
            // strides, a batch split by images, and tiles that end inside grid rows.
            [1, 16, 20, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1],
            [2, 32, 24, 16, 16, 1, 1, 2, 2, 0, 0, 0, 0],
            [1, 16, 8, 30, 30, 7, 7, 2, 2, 3, 3, 3, 3],
            [5, 16, 8, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1],
            [1, 256, 8, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1],
        ];
        let mut on_grid = 0;
        for [n, ci, co, h, w, kh, kw, sh, sw, ph, pw, th, tw] in geometries {
            let output = [(h + ph + th - kh) / sh + 1, (w + pw + tw - kw) / sw + 1];
            let g = ConvGeometry {
                batch: n,
                in_channels: ci,
                out_channels: co,
                input: [h, w],
                output,
                kernel: [kh, kw],
                stride: [sh, sw],
                padding: [ph, pw],
            };
            let x: Vec<f32> = (0..n * ci * h * w).map(|i| val(i, 1)).collect();
            let wt: Vec<f32> = (0..co * ci * kh * kw).map(|i| val(i, 2)).collect();
            let e = Epilogue {
                scale: (0..co).map(|i| 0.5 + (i % 3) as f32).collect(),
                shift: (0..co).map(|i| i as f32 - 1.0).collect(),
                lo: 0.0,
                hi: 30.0,
            };
            let [oh, ow] = output;
            let want: Vec<f32> = (0..n * co * oh * ow)
                .map(|i| {
                    let (img, c, r, col) =
                        (i / (co * oh * ow), i / (oh * ow) % co, i / ow % oh, i % ow);
                    let mut acc = 0.0f64;
                    for k in 0..ci * kh * kw {
                        let (cin, a, b) = (k / (kh * kw), k / kw % kh, k % kw);
                        let ih = (r * sh + a).checked_sub(ph).filter(|&v| v < h);
                        let iw = (col * sw + b).checked_sub(pw).filter(|&v| v < w);
                        if let (Some(ih), Some(iw)) = (ih, iw) {
                            acc += x[((img * ci + cin) * h + ih) * w + iw] as f64
                                * wt[c * ci * kh * kw + k] as f64;
                        }
                    }
                    let y = acc as f32 * e.scale[c] + e.shift[c];
                    y.clamp(e.lo, e.hi)
                })
                .collect();
            let mut got = vec![f32::NAN; want.len()];
            forward(&g, &x, &wt, &e, &mut got);
            assert_eq!(got, want, "{g:?}");
            on_grid += usize::from(!g.is_pointwise() && super::super::conv_grid::pays(&g));
        }
        assert_eq!(on_grid, 7, "geometries on the grid");
    }
}
