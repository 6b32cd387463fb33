//! Quantized pooling: max pooling ([`max_pool2d`]) and adaptive average pooling to 1×1. Both
//! outputs keep the input's scale and zero-point.
//!
//! # Max pooling (`F.max_pool2d` on a quint8 tensor, `quantized_max_pool2d` in
//! `aten/src/ATen/native/quantized/cpu/Pooling.cpp`)
//! The maximum of the quint8 values each window covers, so both engines agree with float max
//! pooling of the dequantized input, save one case. Positions in the padding are not read (not
//! read as the zero-point): the native kernel skips them; qnnpack, which runs whenever
//! `ceil_mode` is off, reads the nearest input position instead (its indirection buffer clamps
//! them), which is the same maximum unless the dilation is above 1 (it also refuses a 1×1
//! window, which runs here). The output keeps the input's memory format on both engines.
//!
//! # Adaptive average pooling (`F.adaptive_avg_pool2d(x, (1, 1))`,
//! `aten/src/ATen/native/quantized/cpu/AdaptiveAveragePooling.cpp`). With `K = H·W`:
//!
//! # qnnpack (`qnnpack_adaptive_avg_pool2d` → `qnnpack_avg_pool2d`, taken whenever the input is
//! not already 1×1)
//! ```text
//! r = s / (s · (float)K)                                   // f32
//! y = clamp(cvtps((float)Σ(q − z) · r) + z, 0, 255)        // ties to even
//! ```
//! PyTorch's QNNPACK fork requantizes average pooling in fp32 like its convolutions; the original
//! QNNPACK fixed-point formula (24-bit multiplier, rounding half away from zero) disagrees on exact
//! ties (19 of the 644 fixture outputs, all with `K` a power of two), which the oracle settled.
//!
//! # native, channels-last input (`_qadaptive_avg_pool_kernel`; a quantized conv's output is
//! channels-last, so this is what a converted model runs)
//! ```text
//! mult = s / s / (float)K;  inv = 1.0f / (1.0f / mult)
//! y = clamp(nearbyint((float)(Σq − z·K) · inv) + z, 0, 255)
//! ```
//!
//! # native, NCHW-contiguous input (`adaptive_avg_pool_single_out_frame`)
//! ```text
//! r = ((float)(1.0 / 1) / kH) / kW;   y = nearbyint((float)Σq · r)
//! ```

use super::buffer::Buffer;
use super::engine::Engine;
use super::kernels::bytewise::{ByteKernels, MaxPoolCall};
use super::kernels::{DEFAULT, Int8Kernels};
use super::requant::{cvtps_epi32, saturate_to_u8};
use super::tensor::{MemoryFormat, QTensor, round_half_even};
use crate::{Error, Result};

/// The memory format PyTorch's input would have, which selects the native kernel (the values
/// are always passed NCHW here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolInputLayout {
    /// Channels-last (the output of a quantized convolution, as in a converted model).
    ChannelsLast,
    /// NCHW-contiguous.
    Contiguous,
}

/// Arithmetic of one pooling call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PoolParams {
    /// qnnpack: `cvtps((float)Σ(q − z) · scale) + z`.
    Qnnpack {
        /// Pool size `H·W`.
        size: usize,
        /// `s / (s · (float)K)`.
        scale: f32,
        /// Zero-point.
        zero_point: i32,
    },
    /// Native kernel on a channels-last input: `nearbyint((Σq − z·K) · inv) + z`.
    NativeChannelsLast {
        /// Pool size.
        size: usize,
        /// `1.0f / (1.0f / (1.0f / K))`.
        inv_scale: f32,
        /// Zero-point.
        zero_point: i32,
    },
    /// Native kernel on an NCHW input: `nearbyint(Σq · r)`.
    NativeContiguous {
        /// Pool size.
        size: usize,
        /// `(1.0f / kH) / kW`.
        reciprocal: f32,
    },
}

impl PoolParams {
    /// The arithmetic PyTorch uses for an `h × w` input with zero-point `zero_point` and scale
    /// `scale` on `engine`, for an input in `layout`.
    pub fn new(
        engine: Engine,
        layout: PoolInputLayout,
        h: usize,
        w: usize,
        scale: f32,
        zero_point: i32,
    ) -> Self {
        let size = h * w;
        if engine == Engine::Qnnpack && size > 1 {
            return PoolParams::Qnnpack {
                size,
                scale: scale / (scale * size as f32),
                zero_point,
            };
        }
        match layout {
            PoolInputLayout::ChannelsLast => {
                // PyTorch: input_scale / output_scale / size, and s / s == 1 exactly.
                let mult = 1.0f32 / size as f32;
                PoolParams::NativeChannelsLast {
                    size,
                    inv_scale: 1.0f32 / (1.0f32 / mult),
                    zero_point,
                }
            }
            PoolInputLayout::Contiguous => PoolParams::NativeContiguous {
                size,
                reciprocal: (1.0f32 / h as f32) / w as f32,
            },
        }
    }

    /// Averages one channel, given the sum of its `K` quint8 values.
    #[inline]
    pub fn apply(&self, sum: i64) -> u8 {
        match *self {
            PoolParams::Qnnpack {
                size,
                scale,
                zero_point,
            } => {
                let acc = (sum - zero_point as i64 * size as i64) as i32;
                saturate_to_u8(cvtps_epi32(acc as f32 * scale), zero_point, 0, 255)
            }
            PoolParams::NativeChannelsLast {
                size,
                inv_scale,
                zero_point,
            } => {
                let acc = (sum - zero_point as i64 * size as i64) as i32 as f32;
                let t = round_half_even(acc * inv_scale) as i64 + zero_point as i64;
                t.clamp(0, 255) as u8
            }
            PoolParams::NativeContiguous { reciprocal, .. } => ((sum as f32) * reciprocal)
                .round_ties_even()
                .clamp(0.0, 255.0)
                as u8,
        }
    }
}

/// The shape of a pooling's input, which must be `[n, c, h, w]` with `h, w > 0`.
pub(crate) fn nchw_shape<'a>(input: &'a QTensor, op: &str) -> Result<&'a [usize]> {
    match input.shape() {
        s @ [_, _, h, w] if *h > 0 && *w > 0 => Ok(s),
        s => Err(Error::Shape(format!(
            "{op} expects a non-empty NCHW input, got {s:?}"
        ))),
    }
}

/// `F.adaptive_avg_pool2d(x, (1, 1))` on a quint8 `[n, c, h, w]` tensor, with the default kernels.
pub fn adaptive_avg_pool2d_1x1(
    input: &QTensor,
    engine: Engine,
    layout: PoolInputLayout,
) -> Result<QTensor> {
    adaptive_avg_pool2d_1x1_with(&DEFAULT, input, engine, layout)
}

/// [`adaptive_avg_pool2d_1x1`] with the given kernels.
pub fn adaptive_avg_pool2d_1x1_with(
    kernels: &dyn Int8Kernels,
    input: &QTensor,
    engine: Engine,
    layout: PoolInputLayout,
) -> Result<QTensor> {
    let s = nchw_shape(input, "adaptive_avg_pool2d")?;
    let q = input.qparams();
    let p = PoolParams::new(engine, layout, s[2], s[3], q.scale, q.zero_point);
    let mut out = Buffer::new(s[0] * s[1]);
    // Either format: a channels-last input is summed in place (no transpose of the map).
    kernels.global_avg_pool(&p, input, &mut out);
    QTensor::from_buffer(out, &[s[0], s[1], 1, 1], q, MemoryFormat::Contiguous)
}

/// The arguments of `F.max_pool2d` (`nn.MaxPool2d`), per axis (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dSpec {
    /// Window size.
    pub kernel_size: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Implicit padding on both sides.
    pub padding: [usize; 2],
    /// Spacing of the window's taps.
    pub dilation: [usize; 2],
    /// Output sizes rounded up, with PyTorch's rule that the last window starts inside the
    /// input or its left padding.
    pub ceil_mode: bool,
}

impl MaxPool2dSpec {
    /// PyTorch's checks: positive kernel, stride and dilation; padding at most half the kernel.
    pub fn check(&self) -> Result<()> {
        let positive = |v: [usize; 2]| v.iter().all(|&x| x > 0);
        if !(positive(self.kernel_size) && positive(self.stride) && positive(self.dilation)) {
            return Err(Error::Config(format!(
                "max pooling needs a positive kernel size, stride and dilation, got {self:?}"
            )));
        }
        if (0..2).any(|a| self.padding[a] > self.kernel_size[a] / 2) {
            return Err(Error::Config(format!(
                "max pooling: pad should be at most half of kernel size, got padding {:?} for \
                 kernel {:?}",
                self.padding, self.kernel_size
            )));
        }
        Ok(())
    }

    /// The output size along `axis` (0: height, 1: width) for an input of `size`
    /// (`pooling_output_shape`); an error where it is below 1.
    pub fn output_size(&self, axis: usize, size: usize) -> Result<usize> {
        let window = [self.kernel_size, self.stride, self.padding, self.dilation].map(|v| v[axis]);
        pooling_output_size(window, self.ceil_mode, size).ok_or_else(|| {
            Error::Shape(format!(
                "max pooling {self:?} of an input of size {size}: output size is too small"
            ))
        })
    }

    /// The kernel call on `[n, c, h, w]` for `engine`.
    fn call(&self, shape: &[usize], engine: Engine) -> Result<MaxPoolCall> {
        self.check()?;
        Ok(MaxPoolCall {
            planes: shape[0] * shape[1],
            hw: [shape[2], shape[3]],
            out_hw: [
                self.output_size(0, shape[2])?,
                self.output_size(1, shape[3])?,
            ],
            window: *self,
            clamp: engine == Engine::Qnnpack && !self.ceil_mode,
        })
    }
}

/// PyTorch's `pooling_output_shape` along one axis for `[kernel, stride, padding, dilation]`
/// (all positive but the padding): `⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1`,
/// rounded up with `ceil_mode` unless that last window would start past the input and its left
/// padding; `None` below 1.
pub(crate) fn pooling_output_size(
    window: [usize; 4],
    ceil_mode: bool,
    size: usize,
) -> Option<usize> {
    let [k, s, p, d] = window.map(|v| v as i64);
    let span = size as i64 + 2 * p - d * (k - 1) - 1 + if ceil_mode { s - 1 } else { 0 };
    let mut out = span.div_euclid(s) + 1;
    if ceil_mode && (out - 1) * s >= size as i64 + p {
        out -= 1;
    }
    (out >= 1).then_some(out as usize)
}

/// `F.max_pool2d` on a quint8 `[n, c, h, w]` tensor (either memory format; the output keeps
/// it), on the fastest byte kernels.
pub fn max_pool2d(input: &QTensor, spec: &MaxPool2dSpec, engine: Engine) -> Result<QTensor> {
    max_pool2d_with(ByteKernels::detect(), input, spec, engine)
}

/// [`max_pool2d`] with the given kernels.
pub fn max_pool2d_with(
    kernels: ByteKernels,
    input: &QTensor,
    spec: &MaxPool2dSpec,
    engine: Engine,
) -> Result<QTensor> {
    let s = nchw_shape(input, "max_pool2d")?;
    let call = spec.call(s, engine)?;
    let [oh, ow] = call.out_hw;
    let mut out = Buffer::new(call.planes * oh * ow);
    // Channels-last stays channels-last (as PyTorch's), with no transposition.
    let format = input.format();
    match format {
        MemoryFormat::ChannelsLast => kernels.max_pool2d_nhwc(&call, s[1], input.data(), &mut out),
        MemoryFormat::Contiguous => kernels.max_pool2d(&call, input.data(), &mut out),
    }
    QTensor::from_buffer(out, &[s[0], s[1], oh, ow], input.qparams(), format)
}
