//! Kernels whose output bytes are input bytes, or a function of one input byte: quantized max
//! pooling (a max of quint8 values needs no requantization), average pooling (a sum of bytes,
//! requantized once per pixel and channel) and a 256-entry table lookup
//! (quantized hardswish and hardsigmoid, and cat's requantization, whose output depends on one
//! input byte and per-call qparams), and the quantized multiply (one output byte from two input
//! bytes). The portable [`ByteKernels::Reference`] is plain loops; [`ByteKernels::Avx512`]
//! (AVX-512 BW and VBMI) or else [`ByteKernels::Avx2`] is picked at run time by what the CPU
//! has. All give the same bytes (`tests/it/pool_hardswish.rs`, `tests/it/avg_pool.rs`,
//! `tests/it/functional_int8.rs`).

use super::{for_each_block, threads_for};
use crate::int8::avg_pool::AvgPoolCall;
use crate::int8::mul::MulParams;
use crate::int8::pool::MaxPool2dSpec;

/// One max pooling call over `planes` row-major `h × w` planes into `oh × ow` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPoolCall {
    /// Planes (`n · c`).
    pub planes: usize,
    /// Input height and width.
    pub hw: [usize; 2],
    /// Output height and width.
    pub out_hw: [usize; 2],
    /// Window size, stride, padding before each axis and dilation (`ceil_mode` is in
    /// `out_hw` already).
    pub window: MaxPool2dSpec,
    /// Window positions outside the input read the nearest edge instead of being skipped
    /// (QNNPACK's indirection buffer; the same maximum unless the dilation is above 1).
    pub clamp: bool,
}

impl MaxPoolCall {
    /// The input row (`axis` 0) or column (1) that window tap `k` of output `o` reads, if any.
    #[inline]
    pub fn position(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        let w = &self.window;
        let i = (o * w.stride[axis] + k * w.dilation[axis]) as isize - w.padding[axis] as isize;
        let size = self.hw[axis] as isize;
        match self.clamp {
            true => Some(i.clamp(0, size - 1) as usize),
            false => (0..size).contains(&i).then_some(i as usize),
        }
    }
}

/// A set of byte kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteKernels {
    /// Portable loops.
    Reference,
    /// AVX2 (x86-64): vector maxima and a 16-way `vpshufb` table lookup.
    Avx2,
    /// AVX-512 BW and VBMI (x86-64): 64-byte maxima and a two-`vpermi2b` table lookup.
    Avx512,
}

impl ByteKernels {
    /// The fastest set this CPU runs.
    pub fn detect() -> Self {
        Self::avx512()
            .or_else(Self::avx2)
            .unwrap_or(ByteKernels::Reference)
    }

    /// [`ByteKernels::Avx512`] where the CPU has AVX-512 F, BW and VBMI (AMD Zen 4 and later,
    /// Intel Ice Lake and later; not Skylake-SP or Cascade Lake, which get AVX2).
    pub fn avx512() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::level::allows(super::level::KernelLevel::Avx512)
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi")
        {
            return Some(ByteKernels::Avx512);
        }
        None
    }

    /// [`ByteKernels::Avx2`] where the CPU has AVX2.
    pub fn avx2() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::level::allows(super::level::KernelLevel::Avx2) && is_x86_feature_detected!("avx2")
        {
            return Some(ByteKernels::Avx2);
        }
        None
    }

    /// Max pooling of `input` (`call.planes` planes) into `out` (every byte written). A window
    /// with no position inside the input gives 0, as PyTorch's native kernel (which starts
    /// from the type's lowest value) does.
    pub fn max_pool2d(self, call: &MaxPoolCall, input: &[u8], out: &mut [u8]) {
        let [h, w] = call.hw;
        let plane_out = call.out_hw[0] * call.out_hw[1];
        if plane_out == 0 {
            return;
        }
        let taps = call.window.kernel_size[0] * call.window.kernel_size[1];
        let block = call
            .planes
            .div_ceil(threads_for(call.planes * plane_out * taps))
            .max(1);
        for_each_block(out, block * plane_out, |index, chunk| {
            let first = index * block;
            let planes = chunk.len() / plane_out;
            let input = &input[first * h * w..][..planes * h * w];
            match self {
                ByteKernels::Reference => reference_max_pool(call, input, chunk),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Avx2` is only made where the CPU has AVX2 (`Self::avx2`).
                ByteKernels::Avx2 => unsafe {
                    super::x86_64::avx2_bytewise::max_pool(call, input, chunk)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Avx512` is only made where the CPU has AVX-512 BW (`Self::avx512`).
                ByteKernels::Avx512 => unsafe {
                    super::x86_64::avx512_bytewise::max_pool(call, input, chunk)
                },
                #[cfg(not(target_arch = "x86_64"))]
                ByteKernels::Avx2 | ByteKernels::Avx512 => reference_max_pool(call, input, chunk),
            }
        });
    }

    /// [`Self::max_pool2d`] on channels-last data: `input` and `out` are NHWC with `c`
    /// channels (`call.planes` is `n · c`). An output pixel's channels are the byte-wise
    /// maximum of its window's input pixels (0 for an empty window), the planar kernels'
    /// bytes without a transposition either way; portable code, which the compiler turns into
    /// `pmaxub` over whole pixels.
    pub fn max_pool2d_nhwc(self, call: &MaxPoolCall, c: usize, input: &[u8], out: &mut [u8]) {
        let ([h, w], [oh, ow], [kh, kw]) = (call.hw, call.out_hw, call.window.kernel_size);
        let row_out = ow * c;
        if row_out == 0 || oh == 0 {
            return;
        }
        let rows = out.len() / row_out;
        let per_block = rows.div_ceil(threads_for(out.len() * kh * kw)).max(1);
        for_each_block(out, per_block * row_out, |index, chunk| {
            for (r, dst) in chunk.chunks_exact_mut(row_out).enumerate() {
                let r = index * per_block + r;
                let (image, oy) = (r / oh, r % oh);
                let image = &input[image * h * w * c..][..h * w * c];
                dst.fill(0);
                for iy in (0..kh).filter_map(|k| call.position(0, oy, k)) {
                    let line = &image[iy * w * c..][..w * c];
                    for (ox, px) in dst.chunks_exact_mut(c).enumerate() {
                        for ix in (0..kw).filter_map(|k| call.position(1, ox, k)) {
                            for (o, &v) in px.iter_mut().zip(&line[ix * c..][..c]) {
                                *o = (*o).max(v);
                            }
                        }
                    }
                }
            }
        });
    }

    /// `out[i] = table[input[i]]` (equally long slices).
    pub fn lookup(self, table: &[u8; 256], input: &[u8], out: &mut [u8]) {
        match self {
            ByteKernels::Reference => reference_lookup(table, input, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only made where the CPU has AVX2 (`Self::avx2`).
            ByteKernels::Avx2 => unsafe { super::x86_64::avx2_bytewise::lookup(table, input, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` is only made where the CPU has AVX-512 BW and VBMI.
            ByteKernels::Avx512 => unsafe {
                super::x86_64::avx512_bytewise::lookup(table, input, out)
            },
            #[cfg(not(target_arch = "x86_64"))]
            ByteKernels::Avx2 | ByteKernels::Avx512 => reference_lookup(table, input, out),
        }
    }
}

impl ByteKernels {
    /// `out[i] = p.apply(a[i], b[i])` (equally long slices), split over threads when long.
    pub fn mul(self, p: &MulParams, a: &[u8], b: &[u8], out: &mut [u8]) {
        let block = out.len().div_ceil(threads_for(out.len())).max(1);
        for_each_block(out, block, |index, chunk| {
            let start = index * block;
            let (a, b) = (&a[start..][..chunk.len()], &b[start..][..chunk.len()]);
            match self {
                ByteKernels::Reference => reference_mul(p, a, b, chunk),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Avx2` is only made where the CPU has AVX2 (`Self::avx2`).
                ByteKernels::Avx2 => unsafe { super::x86_64::avx2_mul::mul(p, a, b, chunk) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Avx512` is only made where the CPU has AVX-512 BW (`Self::avx512`).
                ByteKernels::Avx512 => unsafe { super::x86_64::avx512_mul::mul(p, a, b, chunk) },
                #[cfg(not(target_arch = "x86_64"))]
                ByteKernels::Avx2 | ByteKernels::Avx512 => reference_mul(p, a, b, chunk),
            }
        });
    }
}

impl ByteKernels {
    /// Average pooling of the channels-last `input` (`[n, h, w, c]`) into the channels-last
    /// `out` (`[n, oh, ow, c]`, every byte written), split over threads by output pixels.
    pub fn avg_pool2d(self, call: &AvgPoolCall, input: &[u8], out: &mut [u8]) {
        let c = call.channels;
        let pixels = call.batch * call.out_hw[0] * call.out_hw[1];
        if pixels == 0 || c == 0 {
            return;
        }
        let taps =
            call.rows.first().map_or(0, |r| r.len()) * call.cols.first().map_or(0, |r| r.len());
        let block = pixels.div_ceil(threads_for(out.len() * taps)).max(1);
        for_each_block(out, block * c, |index, chunk| {
            let first = index * block;
            match self {
                ByteKernels::Reference => reference_avg_pool(call, input, first, chunk),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Avx2` is only made where the CPU has AVX2 (`Self::avx2`).
                ByteKernels::Avx2 => unsafe {
                    super::x86_64::avx2_avg_pool::avg_pool(call, input, first, chunk)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Avx512` is only made where the CPU has AVX-512 BW (`Self::avx512`).
                ByteKernels::Avx512 => unsafe {
                    super::x86_64::avx512_avg_pool::avg_pool(call, input, first, chunk)
                },
                #[cfg(not(target_arch = "x86_64"))]
                ByteKernels::Avx2 | ByteKernels::Avx512 => {
                    reference_avg_pool(call, input, first, chunk)
                }
            }
        });
    }
}

/// The output pixel `p` (counted over images, rows and columns) of an average pooling call:
/// its image, the input rows and columns it covers, and its index into the per-pixel tables.
#[inline]
pub fn avg_pool_pixel(
    call: &AvgPoolCall,
    p: usize,
) -> (usize, std::ops::Range<usize>, std::ops::Range<usize>, usize) {
    let [oh, ow] = call.out_hw;
    let (image, at) = (p / (oh * ow), p % (oh * ow));
    let (rows, cols) = (call.rows[at / ow].clone(), call.cols[at % ow].clone());
    (image, rows, cols, at)
}

/// The portable average pooling of the output pixels from `first` on into `out`.
pub fn reference_avg_pool(call: &AvgPoolCall, input: &[u8], first: usize, out: &mut [u8]) {
    let (c, [h, w]) = (call.channels, call.hw);
    let mut acc = vec![0i32; c];
    for (i, dst) in out.chunks_exact_mut(c).enumerate() {
        let (image, rows, cols, at) = avg_pool_pixel(call, first + i);
        acc.fill(call.bias[at]);
        for y in rows {
            for x in cols.clone() {
                let src = &input[((image * h + y) * w + x) * c..][..c];
                for (a, &q) in acc.iter_mut().zip(src) {
                    *a += q as i32;
                }
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = call.finish(a, call.multiplier[at]);
        }
    }
}

/// The portable multiply.
pub fn reference_mul(p: &MulParams, a: &[u8], b: &[u8], out: &mut [u8]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = p.apply(x, y);
    }
}

fn reference_max_pool(call: &MaxPoolCall, input: &[u8], out: &mut [u8]) {
    let ([h, w], [oh, ow], [kh, kw]) = (call.hw, call.out_hw, call.window.kernel_size);
    for (plane, dst) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = 0u8;
                for iy in (0..kh).filter_map(|k| call.position(0, oy, k)) {
                    for ix in (0..kw).filter_map(|k| call.position(1, ox, k)) {
                        m = m.max(plane[iy * w + ix]);
                    }
                }
                dst[oy * ow + ox] = m;
            }
        }
    }
}

/// The portable lookup.
pub fn reference_lookup(table: &[u8; 256], input: &[u8], out: &mut [u8]) {
    for (o, &q) in out.iter_mut().zip(input) {
        *o = table[q as usize];
    }
}

/// The separable max pooling the vector kernels share: per output row, `fold_rows(plane, w,
/// rows, dst)` folds the window's input rows into one row (written at `left`, the padding before
/// it filled with 0, or the edge values when `call.clamp`), then `fold_columns(row, taps,
/// dilation, stride, dst)` folds the window's columns along it into the output row. `slack`
/// bytes past the used part of the row let a vector kernel read whole vectors there.
pub(super) fn max_pool_separable(
    call: &MaxPoolCall,
    input: &[u8],
    out: &mut [u8],
    slack: usize,
    fold_rows: impl Fn(&[u8], usize, &[usize], &mut [u8]),
    fold_columns: impl Fn(&[u8], usize, usize, usize, &mut [u8]),
) {
    let ([h, w], [oh, ow], [kh, kw]) = (call.hw, call.out_hw, call.window.kernel_size);
    let (sx, dx, left) = (
        call.window.stride[1],
        call.window.dilation[1],
        call.window.padding[1],
    );
    // Column `ox·sx + kx·dx` of the folded row is tap `kx` of output `ox`.
    let used = (ow - 1) * sx + (kw - 1) * dx + 1;
    let len = used.max(left + w);
    let mut row = vec![0u8; len + slack];
    let mut rows = Vec::with_capacity(kh);
    for (plane, dst) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            rows.clear();
            rows.extend((0..kh).filter_map(|k| call.position(0, oy, k)));
            fold_rows(plane, w, &rows, &mut row[left..left + w]);
            let (lo, hi) = match (call.clamp, rows.is_empty()) {
                (true, false) => (row[left], row[left + w - 1]),
                _ => (0, 0),
            };
            row[..left].fill(lo);
            row[left + w..len].fill(hi);
            fold_columns(&row, kw, dx, sx, &mut dst[oy * ow..][..ow]);
        }
    }
}
