//! The inference (forward-only) depthwise convolution with its [`Epilogue`], on contiguous NCHW
//! `f32` slices: `y[n,c] = epilogue_c(Σ_{kh,kw} x[n,c,oh·sh+kh−ph, ow·sw+kw−pw] · w[c,kh,kw])`,
//! PyTorch's `conv2d(x, w, groups=C)` followed by batch norm and ReLU/ReLU6.
//!
//! The training kernels ([`super::depthwise_kernels`]) gather a channel's whole batch and compute
//! every stride-1 position, which suits the small planes of a training step; at inference the
//! planes are large (112×112 at 224² inputs) and half of MobileNetV2's depthwise convolutions
//! have stride 2. Here each plane is copied once, zero-padded, with each padded row split into
//! its `sw` phases (for stride 2: even columns, then odd ones), so that every tap reads a
//! contiguous run of the row it needs; sixteen outputs at a time accumulate all taps in registers
//! (in tap order, `0 + w₀·x₀ + w₁·x₁ + …`), then pass through the epilogue on their way out
//! (rows shorter than sixteen, 7×7 and 14×14 maps, compute a whole block and keep their part).

use rayon::prelude::*;

use super::depthwise_kernels::DepthwiseGeometry;
use super::epilogue::{Epilogue, affine_clamp_one};
use super::simd::Isa;

/// Outputs accumulated together in registers.
pub(super) const BLOCK: usize = 16;

/// The padded, phase-split layout of one input plane.
pub(super) struct Padded {
    /// Padded rows kept: enough for every output row's taps.
    rows: usize,
    /// Values per phase of a row (`⌈padded width / sw⌉`).
    phase_len: usize,
}

impl Padded {
    pub(super) fn new(g: &DepthwiseGeometry) -> Self {
        let [oh, ow] = g.output;
        let rows = (oh.max(1) - 1) * g.stride[0] + g.kernel[0];
        let width = (ow.max(1) - 1) * g.stride[1] + g.kernel[1];
        Self {
            rows,
            phase_len: width.div_ceil(g.stride[1]),
        }
    }

    fn row_len(&self, g: &DepthwiseGeometry) -> usize {
        self.phase_len * g.stride[1]
    }

    /// The buffer's length: the rows, then one register block of slack for the last block's
    /// reads past the end of its row.
    pub(super) fn len(&self, g: &DepthwiseGeometry) -> usize {
        self.rows * self.row_len(g) + BLOCK
    }
}

/// `y = epilogue(depthwise_conv2d(x, w))`; `x` is `[N, C, H, W]`, `w` is `[C, 1, KH, KW]`,
/// `y` is `[N, C, OH, OW]` and is overwritten. Planes run in parallel.
///
/// # Panics
/// If a slice's length or the epilogue's channel count does not match `g`.
pub fn forward(g: &DepthwiseGeometry, x: &[f32], w: &[f32], e: &Epilogue, y: &mut [f32]) {
    let ([h, wd], [oh, ow], k) = (g.input, g.output, g.kernel[0] * g.kernel[1]);
    let planes = g.batch * g.channels;
    assert_eq!(x.len(), planes * h * wd, "input size");
    assert_eq!(w.len(), g.channels * k, "weight size");
    assert_eq!(y.len(), planes * oh * ow, "output size");
    assert_eq!(e.channels(), g.channels, "epilogue channels");
    let out_plane = oh * ow;
    if out_plane == 0 {
        return;
    }
    let layout = Padded::new(g);
    let taps = Taps::new(g, &layout);
    // Enough planes per task to outweigh rayon's cost on small maps.
    let per_task = (super::TASK_VALUES / out_plane.max(1)).clamp(1, 64);
    y.par_chunks_mut(out_plane * per_task)
        .enumerate()
        .for_each(|(task, out)| {
            let mut buf = vec![0.0f32; layout.len(g)];
            for (i, out) in out.chunks_exact_mut(out_plane).enumerate() {
                let p = task * per_task + i;
                let c = p % g.channels;
                pad_plane(g, &layout, &x[p * h * wd..][..h * wd], 0.0, &mut buf);
                plane(
                    &taps,
                    &buf,
                    &w[c * k..][..k],
                    [e.scale[c], e.shift[c], e.lo, e.hi],
                    out,
                );
            }
        });
}

/// Copies one `H × W` plane into `buf` padded with `fill` (zero for a convolution, `−∞` for
/// max pooling) and phase-split ([`Padded`]).
pub(super) fn pad_plane(
    g: &DepthwiseGeometry,
    layout: &Padded,
    x: &[f32],
    fill: f32,
    buf: &mut [f32],
) {
    let ([h, w], ph, sw) = (g.input, g.padding[0], g.stride[1]);
    let row_len = layout.row_len(g);
    // A strided row is padded here first, then split into its phases.
    let mut padded = vec![fill; if sw == 1 { 0 } else { row_len }];
    for (r, row) in buf[..layout.rows * row_len]
        .chunks_exact_mut(row_len)
        .enumerate()
    {
        let Some(ih) = r.checked_sub(ph).filter(|&ih| ih < h) else {
            row.fill(fill);
            continue;
        };
        let src = &x[ih * w..][..w];
        if sw == 1 {
            pad_row(src, g.padding[1], fill, row);
            continue;
        }
        pad_row(src, g.padding[1], fill, &mut padded);
        if sw == 2 {
            // Even columns, then odd ones: a loop the compiler vectorises.
            let (even, odd) = row.split_at_mut(layout.phase_len);
            for ((pair, e), o) in padded.chunks_exact(2).zip(even).zip(odd) {
                (*e, *o) = (pair[0], pair[1]);
            }
        } else {
            // Phase `f` holds padded columns f, f + sw, f + 2·sw, …
            for (f, dst) in row.chunks_exact_mut(layout.phase_len).enumerate() {
                for (d, &v) in dst.iter_mut().zip(padded[f..].iter().step_by(sw)) {
                    *d = v;
                }
            }
        }
    }
}

/// `row = [fill; pw] ++ src ++ [fill; …]`, cut to `row`'s length.
fn pad_row(src: &[f32], pw: usize, fill: f32, row: &mut [f32]) {
    let width = row.len();
    let (start, end) = (pw.min(width), (pw + src.len()).min(width));
    row[..start].fill(fill);
    row[start..end].copy_from_slice(&src[..end - start]);
    row[end..].fill(fill);
}

/// What every plane of one convolution shares: output sides, row stride on the buffer and each
/// tap's offset from the start of an output row's first padded row.
pub(super) struct Taps {
    pub(super) output: [usize; 2],
    /// Padded rows between consecutive output rows (`sh` rows of the buffer).
    pub(super) row_step: usize,
    pub(super) offsets: Vec<usize>,
}

impl Taps {
    pub(super) fn new(g: &DepthwiseGeometry, layout: &Padded) -> Self {
        let ([kh, kw], sw) = (g.kernel, g.stride[1]);
        let row_len = layout.row_len(g);
        Self {
            output: g.output,
            row_step: g.stride[0] * row_len,
            offsets: (0..kh * kw)
                .map(|t| (t / kw) * row_len + (t % kw) % sw * layout.phase_len + (t % kw) / sw)
                .collect(),
        }
    }
}

/// One output plane from its padded input plane `buf`, taps `w` and epilogue
/// `[scale, shift, lo, hi]`, built for the widest level this CPU runs.
fn plane(taps: &Taps, buf: &[f32], w: &[f32], epilogue: [f32; 4], out: &mut [f32]) {
    plane_at(Isa::best(), taps, buf, w, epilogue, out)
}

/// [`plane`] built for `isa` (the reference where this CPU lacks it).
fn plane_at(isa: Isa, taps: &Taps, buf: &[f32], w: &[f32], epilogue: [f32; 4], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: this CPU has AVX-512F (checked just above).
            return unsafe { x86::plane_avx512(taps, buf, w, epilogue, out) };
        }
        if isa != Isa::Portable && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2 (checked just above).
            return unsafe { x86::plane_avx2(taps, buf, w, epilogue, out) };
        }
    }
    let _ = isa;
    plane_portable(taps, buf, w, epilogue, out)
}

/// Calls `$block(base, o, w, offsets, epilogue, out)` for every block of `BLOCK` outputs of every
/// output row (`out` the block's part of the row, shorter at the row's end): the loop every
/// build shares. Whole blocks only: the buffer's slack keeps the last one's reads inside, and the
/// outputs past the row are dropped.
macro_rules! for_each_block {
    ($taps:expr, $buf:expr, $w:expr, $epilogue:expr, $out:expr, $block:path) => {{
        let [oh, ow] = $taps.output;
        for (r, out_row) in $out.chunks_exact_mut(ow).enumerate().take(oh) {
            let base = &$buf[r * $taps.row_step..];
            for (b, out) in out_row.chunks_mut(BLOCK).enumerate() {
                $block(base, b * BLOCK, $w, &$taps.offsets, $epilogue, out);
            }
        }
    }};
}

/// The reference build.
fn plane_portable(taps: &Taps, buf: &[f32], w: &[f32], epilogue: [f32; 4], out: &mut [f32]) {
    for_each_block!(taps, buf, w, epilogue, out, block_portable);
}

/// One block: `out[l] = epilogue(0 + Σ_t w[t] · base[offsets[t] + o + l])`, taps in order, each
/// product rounded, then added (no fused multiply-add, as in the vector builds).
#[inline(always)]
fn block_portable(
    base: &[f32],
    o: usize,
    w: &[f32],
    offsets: &[usize],
    [scale, shift, lo, hi]: [f32; 4],
    out: &mut [f32],
) {
    let mut acc = [0.0f32; BLOCK];
    for (&tap, &off) in w.iter().zip(offsets) {
        let src = &base[off + o..][..BLOCK];
        for l in 0..BLOCK {
            acc[l] += tap * src[l];
        }
    }
    for (d, &a) in out.iter_mut().zip(&acc) {
        *d = affine_clamp_one(a, scale, shift, lo, hi);
    }
}

/// The vector builds, in intrinsics: the compiler's own vectorisation of the block splits it
/// into mixed widths. Same operations as [`block_portable`] lane by lane: a product, then a sum;
/// the clamp as `min(hi, max(lo, y))`, whose operand order returns `y` for NaN and for equal
/// values, as the reference's comparisons do.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Taps};

    #[target_feature(enable = "avx512f")]
    pub(super) fn plane_avx512(taps: &Taps, buf: &[f32], w: &[f32], e: [f32; 4], out: &mut [f32]) {
        for_each_block!(taps, buf, w, e, out, block_avx512);
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn block_avx512(
        base: &[f32],
        o: usize,
        w: &[f32],
        offsets: &[usize],
        [scale, shift, lo, hi]: [f32; 4],
        out: &mut [f32],
    ) {
        let mut acc = _mm512_setzero_ps();
        for (&tap, &off) in w.iter().zip(offsets) {
            let src = &base[off + o..][..BLOCK];
            // SAFETY: `src` holds 16 values.
            let x = unsafe { _mm512_loadu_ps(src.as_ptr()) };
            acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(tap), x));
        }
        let y = _mm512_add_ps(
            _mm512_mul_ps(acc, _mm512_set1_ps(scale)),
            _mm512_set1_ps(shift),
        );
        let y = _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), y));
        if out.len() == BLOCK {
            // SAFETY: `out` holds 16 values.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), y) };
            return;
        }
        let mut lanes = [0.0f32; BLOCK];
        // SAFETY: `lanes` holds 16 values.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), y) };
        out.copy_from_slice(&lanes[..out.len()]);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn plane_avx2(taps: &Taps, buf: &[f32], w: &[f32], e: [f32; 4], out: &mut [f32]) {
        for_each_block!(taps, buf, w, e, out, block_avx2);
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn block_avx2(
        base: &[f32],
        o: usize,
        w: &[f32],
        offsets: &[usize],
        [scale, shift, lo, hi]: [f32; 4],
        out: &mut [f32],
    ) {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (&tap, &off) in w.iter().zip(offsets) {
            let src = &base[off + o..][..BLOCK];
            let t = _mm256_set1_ps(tap);
            // SAFETY: `src` holds 16 values.
            let (x0, x1) = unsafe {
                (
                    _mm256_loadu_ps(src.as_ptr()),
                    _mm256_loadu_ps(src.as_ptr().add(8)),
                )
            };
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(t, x0));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(t, x1));
        }
        let (s, h) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
        let (l, u) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let fin = |a| _mm256_min_ps(u, _mm256_max_ps(l, _mm256_add_ps(_mm256_mul_ps(a, s), h)));
        let mut lanes = [0.0f32; BLOCK];
        let dst = if out.len() == BLOCK {
            out.as_mut_ptr()
        } else {
            lanes.as_mut_ptr()
        };
        // SAFETY: `dst` holds 16 values.
        unsafe {
            _mm256_storeu_ps(dst, fin(a0));
            _mm256_storeu_ps(dst.add(8), fin(a1));
        }
        if out.len() < BLOCK {
            out.copy_from_slice(&lanes[..out.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::depthwise_kernels::{TEST_GEOMETRIES, test_geometry};

    fn val(i: usize, k: u32) -> f32 {
        ((i as u32).wrapping_mul(2_654_435_761 ^ k) % 17) as f32 * 0.25 - 2.0
    }

    /// The kernel against the formula in the module docs, term by term in tap order (so equal
    /// bit for bit), over strides, odd and non-square sides, asymmetric padding, rows longer
    /// than a register block and planes smaller than the kernel; and every SIMD build against
    /// the reference.
    #[test]
    fn matches_the_definition_in_every_build() {
        // The kernel tests' geometries, and rows longer than a register block.
        let longer_rows = [
            [1, 2, 9, 37, 3, 3, 1, 1, 1, 1, 1, 1],
            [1, 2, 10, 70, 5, 5, 2, 2, 2, 2, 2, 2],
            [2, 3, 8, 41, 3, 3, 2, 2, 1, 1, 0, 0],
        ];
        for row in TEST_GEOMETRIES.into_iter().chain(longer_rows) {
            let [n, c, h, w, kh, kw, sh, sw, ph, pw, ..] = row;
            let g = test_geometry(row);
            let output = g.output;
            let x: Vec<f32> = (0..n * c * h * w).map(|i| val(i, 1)).collect();
            let wt: Vec<f32> = (0..c * kh * kw).map(|i| val(i, 2)).collect();
            let e = Epilogue {
                scale: (0..c).map(|i| 0.5 + i as f32).collect(),
                shift: (0..c).map(|i| i as f32 - 1.0).collect(),
                lo: 0.0,
                hi: 6.0,
            };
            let [oh, ow] = output;
            let mut want = vec![0.0f32; n * c * oh * ow];
            for (i, v) in want.iter_mut().enumerate() {
                let (p, o) = (i / (oh * ow), i % (oh * ow));
                let (ch, r, col) = (p % c, o / ow, o % ow);
                let mut acc = 0.0f32;
                for t in 0..kh * kw {
                    let ih = (r * sh + t / kw).checked_sub(ph).filter(|&v| v < h);
                    let iw = (col * sw + t % kw).checked_sub(pw).filter(|&v| v < w);
                    let xv = match (ih, iw) {
                        (Some(ih), Some(iw)) => x[(p * h + ih) * w + iw],
                        _ => 0.0,
                    };
                    acc += wt[ch * kh * kw + t] * xv;
                }
                *v = affine_clamp_one(acc, e.scale[ch], e.shift[ch], e.lo, e.hi);
            }
            let mut got = vec![f32::NAN; want.len()];
            forward(&g, &x, &wt, &e, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{g:?}");
            // Every build of the plane kernel equals the reference build.
            let layout = Padded::new(&g);
            let mut buf = vec![0.0; layout.len(&g)];
            pad_plane(&g, &layout, &x[..h * w], 0.0, &mut buf);
            let mut reference = vec![0.0; oh * ow];
            let taps = Taps::new(&g, &layout);
            let e = [1.5, -0.5, -1.0, 3.0];
            plane_portable(&taps, &buf, &wt[..kh * kw], e, &mut reference);
            for isa in Isa::available() {
                let mut built = vec![0.0; oh * ow];
                plane_at(isa, &taps, &buf, &wt[..kh * kw], e, &mut built);
                assert_eq!(bits(&built), bits(&reference), "{isa:?} {g:?}");
            }
        }
    }
}
