//! Quantized average pooling with a window ([`avg_pool2d`]): `F.avg_pool2d(x, kernel_size,
//! stride, padding, ceil_mode, count_include_pad, divisor_override)` on a quint8 tensor
//! (`aten/src/ATen/native/quantized/cpu/AveragePool2d.cpp`). The output keeps the input's scale
//! `s` and zero-point `z`.
//!
//! Every path sums the window's positions inside the input less the zero-point,
//! `acc = Σ q − z·size` (int32; `size` those positions, so padding counts as the zero-point)
//! and divides by `D`; they differ in `D` and in the rounding. With `pool` the window's extent
//! clipped to the padded input (`kh·kw` but where a `ceil_mode` window hangs past it):
//! `D = divisor_override`, else `pool` with `count_include_pad`, else `size`.
//!
//! # qnnpack, `ceil_mode` off (`qnnpack_avg_pool2d` → `pytorch_qnnp_create_average_pooling2d_nhwc_q8`)
//! ```text
//! r = s / (s · (float)(kh·kw))                             // f32
//! y = clamp(cvtps((float)acc · r) + z, 0, 255)             // ties to even
//! ```
//! QNNPACK reads padding as the zero-point and always divides by `kh·kw`: it ignores
//! `count_include_pad` and `divisor_override` (a divisor of 0 included), which the fixtures
//! show. Its fp32 requantization is the one [`crate::int8::pool`] records for global pooling.
//! With `ceil_mode` qnnpack runs the native kernels below, as x86 does.
//!
//! # native, channels-last input (`_qavg_pool_nhwc_kernel`; a quantized conv's output is
//! channels-last, so this is what a converted model runs)
//! ```text
//! m = s / s / (float)D                                      // 1.0f / D
//! vector part:  y = clamp(cvtps((float)acc · m) + z, 0, 255)
//! scalar tail:  y = clamp(nearbyint((float)acc · (1.0f / (1.0f / m))) + z, 0, 255)
//! ```
//! The vector part covers `C / 8 · 8` channels of each pixel on PyTorch's AVX2 builds and
//! `C / 16 · 16` on its AVX-512 builds, the tail the rest. They give the same bytes:
//! `1.0f / (1.0f / (1.0f / D)) == 1.0f / D` for every `D` from 1 to 2³¹ − 1 (checked
//! exhaustively; negative divisors are symmetric), and both round ties to even. The fixture
//! script asserts both builds agree.
//!
//! # native, NCHW-contiguous input (`avg_pool2d_out_frame`)
//! ```text
//! m = (float)(1.0 / D)                                      // double, then narrowed
//! y = clamp(nearbyint((float)acc · m + (float)z), 0, 255)   // z added before rounding
//! ```
//! Adding the zero-point before rounding moves ties when `z` is odd (`0.5 + 1` rounds to 2,
//! `round(0.5) + 1` is 1).
//!
//! Every path is one formula here, `finish(acc, m)` with a per-pixel multiplier and the
//! zero-point added before or after rounding ([`AvgPoolCall`]), run by the byte kernels over a
//! channels-last copy of the input ([`ByteKernels::avg_pool2d`]): channels are contiguous there,
//! so one vector kernel serves every path, and an NCHW-stored input costs one transpose. With
//! fewer than 8 channels (an RGB input) the AVX2 kernel is all scalar tail and the AVX-512 one
//! a single masked vector.

use super::buffer::Buffer;
use super::engine::Engine;
use super::kernels::bytewise::ByteKernels;
use super::pool::{PoolInputLayout, nchw_shape, pooling_output_size};
use super::requant::cvtps_epi32;
use super::tensor::{MemoryFormat, QTensor};
use crate::{Error, Result};
use std::ops::Range;

/// The arguments of `F.avg_pool2d` (`nn.AvgPool2d`), per axis (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2dSpec {
    /// Window size.
    pub kernel_size: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Implicit padding on both sides, at most half the kernel.
    pub padding: [usize; 2],
    /// Output sizes rounded up, with PyTorch's rule that the last window starts inside the
    /// input or its left padding.
    pub ceil_mode: bool,
    /// Padded positions count in the divisor.
    pub count_include_pad: bool,
    /// A fixed divisor instead of the window's size (nonzero).
    pub divisor_override: Option<i32>,
}

impl AvgPool2dSpec {
    /// PyTorch's checks: positive kernel and stride, padding at most half the kernel, a
    /// nonzero divisor.
    pub fn check(&self) -> Result<()> {
        let positive = |v: [usize; 2]| v.iter().all(|&x| x > 0);
        if !(positive(self.kernel_size) && positive(self.stride)) {
            return Err(Error::Config(format!(
                "average pooling needs a positive kernel size and stride, got {self:?}"
            )));
        }
        if (0..2).any(|a| self.padding[a] > self.kernel_size[a] / 2) {
            return Err(Error::Config(format!(
                "average pooling: pad should be at most half of kernel size, got padding {:?} \
                 for kernel {:?}",
                self.padding, self.kernel_size
            )));
        }
        if self.divisor_override == Some(0) {
            return Err(Error::Config(
                "average pooling: divisor_override must not be zero".into(),
            ));
        }
        Ok(())
    }

    /// The output size along `axis` (0: height, 1: width) for an input of `size`; an error
    /// where it is below 1.
    pub fn output_size(&self, axis: usize, size: usize) -> Result<usize> {
        let window = [
            self.kernel_size[axis],
            self.stride[axis],
            self.padding[axis],
            1,
        ];
        pooling_output_size(window, self.ceil_mode, size).ok_or_else(|| {
            Error::Shape(format!(
                "average pooling {self:?} of an input of size {size}: output size is too small"
            ))
        })
    }

    /// The windows along `axis` (0: height, 1: width) for an input of `size`: per output
    /// position, the input positions the window covers and its extent clipped to the padded
    /// input (PyTorch's `pool_size` factor).
    pub fn windows(&self, axis: usize, size: usize) -> Result<Vec<(Range<usize>, usize)>> {
        let (k, s, p) = (
            self.kernel_size[axis],
            self.stride[axis],
            self.padding[axis],
        );
        let inside = |i: usize| i.clamp(p, size + p) - p; // padded → input coordinates
        let windows = (0..self.output_size(axis, size)?).map(|o| {
            let start = o * s; // in padded coordinates
            let end = (start + k).min(size + 2 * p);
            (inside(start)..inside(end), end - start)
        });
        Ok(windows.collect())
    }

    /// PyTorch's divisor of a window over `size` input positions with padded extent `pool`.
    pub fn divisor(&self, size: usize, pool: usize) -> i64 {
        match self.divisor_override {
            Some(d) => d as i64,
            None if self.count_include_pad => pool as i64,
            None => size as i64,
        }
    }
}

/// One average pooling call over a channels-last `[n, h, w, c]` input into `[n, oh, ow, c]`:
/// output pixel `(oy, ox)` of every image and channel is
/// `finish(Σ over rows[oy] × cols[ox] of q + bias[oy·ow + ox], multiplier[oy·ow + ox])`.
#[derive(Debug, Clone, PartialEq)]
pub struct AvgPoolCall {
    /// Images.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Input height and width.
    pub hw: [usize; 2],
    /// Output height and width.
    pub out_hw: [usize; 2],
    /// The input rows each output row covers.
    pub rows: Vec<Range<usize>>,
    /// The input columns each output column covers.
    pub cols: Vec<Range<usize>>,
    /// Per output pixel: `−z·size`.
    pub bias: Vec<i32>,
    /// Per output pixel: the float multiplier of its divisor.
    pub multiplier: Vec<f32>,
    /// Zero-point.
    pub zero_point: i32,
    /// The zero-point is added before rounding (x86 on an NCHW input), not after.
    pub zero_point_first: bool,
}

impl AvgPoolCall {
    /// PyTorch's arithmetic for `spec` on an input of `shape` (`[n, c, h, w]`) with qparams
    /// `(scale, zero_point)`, on `engine` for an input held in `layout`.
    pub fn new(
        spec: &AvgPool2dSpec,
        shape: &[usize],
        scale: f32,
        zero_point: i32,
        engine: Engine,
        layout: PoolInputLayout,
    ) -> Result<Self> {
        spec.check()?;
        // 255 · taps must fit the int32 sum (PyTorch's sum would wrap; QNNPACK refuses 2²⁴).
        let taps = spec.kernel_size[0].saturating_mul(spec.kernel_size[1]);
        if taps >= 1 << 23 {
            return Err(Error::Config(format!(
                "average pooling: a window of {taps} positions can overflow the int32 sum \
                 (at most {} positions)",
                (1 << 23) - 1
            )));
        }
        let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        let (ys, xs) = (spec.windows(0, h)?, spec.windows(1, w)?);
        let qnnpack = engine == Engine::Qnnpack && !spec.ceil_mode;
        let (mut bias, mut multiplier) = (Vec::new(), Vec::new());
        for (rows, pool_y) in &ys {
            for (cols, pool_x) in &xs {
                let size = rows.len() * cols.len();
                let divisor = spec.divisor(size, pool_y * pool_x);
                bias.push((-(zero_point as i64) * size as i64) as i32);
                multiplier.push(match (qnnpack, layout) {
                    (true, _) => {
                        let k = (spec.kernel_size[0] * spec.kernel_size[1]) as f32;
                        scale / (scale * k)
                    }
                    (false, PoolInputLayout::ChannelsLast) => 1.0f32 / divisor as i32 as f32,
                    (false, PoolInputLayout::Contiguous) => (1.0f64 / divisor as f64) as f32,
                });
            }
        }
        Ok(AvgPoolCall {
            batch: n,
            channels: c,
            hw: [h, w],
            out_hw: [ys.len(), xs.len()],
            rows: ys.into_iter().map(|(r, _)| r).collect(),
            cols: xs.into_iter().map(|(r, _)| r).collect(),
            bias,
            multiplier,
            zero_point,
            zero_point_first: !qnnpack && layout == PoolInputLayout::Contiguous,
        })
    }

    /// The output byte of accumulator `acc` (the sum with the bias) under `multiplier`, as the
    /// vector kernels compute it (`cvtps` saturates out-of-range values to `i32::MIN`).
    #[inline]
    pub fn finish(&self, acc: i32, multiplier: f32) -> u8 {
        let x = acc as f32 * multiplier;
        let r = match self.zero_point_first {
            true => cvtps_epi32(x + self.zero_point as f32),
            false => cvtps_epi32(x).saturating_add(self.zero_point),
        };
        r.clamp(0, 255) as u8
    }
}

/// `F.avg_pool2d` on a quint8 `[n, c, h, w]` tensor with PyTorch's arithmetic for `engine` and
/// an input PyTorch holds in `layout`, on the fastest byte kernels. The output is stored
/// channels-last.
pub fn avg_pool2d(
    input: &QTensor,
    spec: &AvgPool2dSpec,
    engine: Engine,
    layout: PoolInputLayout,
) -> Result<QTensor> {
    avg_pool2d_with(ByteKernels::detect(), input, spec, engine, layout)
}

/// [`avg_pool2d`] with the given kernels.
pub fn avg_pool2d_with(
    kernels: ByteKernels,
    input: &QTensor,
    spec: &AvgPool2dSpec,
    engine: Engine,
    layout: PoolInputLayout,
) -> Result<QTensor> {
    let s = nchw_shape(input, "avg_pool2d")?;
    let q = input.qparams();
    let call = AvgPoolCall::new(spec, s, q.scale, q.zero_point, engine, layout)?;
    let [oh, ow] = call.out_hw;
    let mut out = Buffer::new(s[0] * s[1] * oh * ow);
    let x = input.to_format(MemoryFormat::ChannelsLast);
    kernels.avg_pool2d(&call, x.data(), &mut out);
    QTensor::from_buffer(out, &[s[0], s[1], oh, ow], q, MemoryFormat::ChannelsLast)
}
