//! Quantized tensors: quint8 activations ([`QTensor`]) and qint8 weights ([`QWeight`]), with
//! PyTorch's quantize / dequantize arithmetic.
//!
//! # Quantize
//! `torch.quantize_per_tensor` / `quantize_per_channel` on an fbgemm build (every x86 PyTorch)
//! call `fbgemm::Quantize<T, LEGACY = false>` (`fbgemm/include/fbgemm/QuantUtils.h`, via
//! `quantize_val` in `aten/src/ATen/native/quantized/AffineQuantizerBase.cpp`):
//!
//! ```text
//! inv = 1.0f / (float)scale                // reciprocal in f32, then a multiply, not a division
//! q   = clamp(nearbyint(x * inv) + zp, qmin, qmax)   // f32, ties to even; clamp in f64
//! ```
//!
//! # Dequantize
//! `fbgemm::Dequantize`: `x = scale * (float)(q - zp)` in f32.

use super::buffer::Buffer;
pub use crate::numerics::round_half_even;
use crate::quant::QuantDtype;
use crate::{Error, Result};

/// Values per task of [`QTensor::quantize`] (256 KiB of f32 in, 64 KiB out).
const QUANTIZE_CHUNK: usize = 1 << 16;

/// Per-tensor quantization parameters of a quint8 activation (`q_scale()`, `q_zero_point()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParamsPt {
    /// Scale (positive, finite). PyTorch stores a double; every engine uses it as f32.
    pub scale: f32,
    /// Zero-point in `[0, 255]`.
    pub zero_point: i32,
}

impl QParamsPt {
    /// Checked constructor: `scale` positive and finite, `zero_point` in `[0, 255]`.
    pub fn new(scale: f32, zero_point: i32) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::Quant(format!(
                "scale must be positive and finite, got {scale}"
            )));
        }
        if !(0..=255).contains(&zero_point) {
            return Err(Error::Quant(format!(
                "quint8 zero_point must be in [0, 255], got {zero_point}"
            )));
        }
        Ok(QParamsPt { scale, zero_point })
    }
}

/// Quantizes one value exactly as `fbgemm::Quantize<T, false>`: `inv_scale` must be
/// `1.0f / scale` (computed once by the caller, as fbgemm does).
///
/// NaN (undefined behaviour in PyTorch) maps to 0 clamped into `[qmin, qmax]`.
#[inline]
pub fn quantize_val(x: f32, inv_scale: f32, zero_point: i32, qmin: i64, qmax: i64) -> i64 {
    let t = round_half_even(x * inv_scale) + zero_point as f32;
    (t as f64).clamp(qmin as f64, qmax as f64) as i64
}

/// `torch.quantize_per_tensor(x, scale, zero_point, dtype).int_repr()`, widened to i64.
pub fn quantize_per_tensor(
    x: &[f32],
    scale: f32,
    zero_point: i64,
    dtype: QuantDtype,
) -> Result<Vec<i64>> {
    check_scale(scale)?;
    let (qmin, qmax) = dtype.bounds();
    if zero_point < qmin || zero_point > qmax {
        return Err(Error::Quant(format!(
            "zero_point {zero_point} is outside the {dtype:?} range [{qmin}, {qmax}]"
        )));
    }
    let inv = 1.0f32 / scale;
    Ok(x.iter()
        .map(|&v| quantize_val(v, inv, zero_point as i32, qmin, qmax))
        .collect())
}

/// `q.dequantize()` for integer values `q` with `scale` and `zero_point`:
/// `scale * (float)(q - zero_point)`.
pub fn dequantize(q: &[i64], scale: f32, zero_point: i64) -> Vec<f32> {
    q.iter().map(|&v| scale * (v - zero_point) as f32).collect()
}

fn check_scale(scale: f32) -> Result<()> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(Error::Quant(format!(
            "scale must be positive and finite, got {scale}"
        )))
    }
}

fn check_len(len: usize, shape: &[usize], what: &str) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(Error::Shape(format!(
            "{what}: {len} values do not fill shape {shape:?} ({n} elements)"
        )));
    }
    Ok(())
}

/// How a [`QTensor`]'s values lie in memory (`torch.memory_format`). The shape is always the
/// logical one (`[n, c, h, w]` for images); only the order of [`QTensor::data`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryFormat {
    /// Row-major in the shape's order (NCHW for images): `torch.contiguous_format`.
    #[default]
    Contiguous,
    /// A rank-4 tensor stored NHWC (`torch.channels_last`), as PyTorch's quantized
    /// convolutions return theirs: the layout the channels-last kernels read and write
    /// without repacking.
    ChannelsLast,
}

/// A quint8 activation tensor (`torch.quint8`, `per_tensor_affine`): row-major (NCHW for
/// images) unless its [`MemoryFormat`] says channels-last.
///
/// Equality compares values and shape, not the memory format.
#[derive(Debug, Clone)]
pub struct QTensor {
    data: Buffer,
    shape: Vec<usize>,
    qparams: QParamsPt,
    format: MemoryFormat,
}

impl PartialEq for QTensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self.qparams == other.qparams
            && self.data() == other.to_format(self.format).data()
    }
}

impl QTensor {
    /// Wraps raw quint8 values in row-major order (`torch._make_per_tensor_quantized_tensor`).
    pub fn from_raw(data: Vec<u8>, shape: &[usize], qparams: QParamsPt) -> Result<Self> {
        Self::from_raw_in(data, shape, qparams, MemoryFormat::Contiguous)
    }

    /// Wraps raw quint8 values stored in `format` (channels-last needs a rank-4 `shape`).
    pub fn from_raw_in(
        data: Vec<u8>,
        shape: &[usize],
        qparams: QParamsPt,
        format: MemoryFormat,
    ) -> Result<Self> {
        Self::from_buffer(Buffer::from_vec(data), shape, qparams, format)
    }

    /// [`Self::from_raw_in`] on a (possibly recycled) [`Buffer`].
    pub(crate) fn from_buffer(
        data: Buffer,
        shape: &[usize],
        qparams: QParamsPt,
        format: MemoryFormat,
    ) -> Result<Self> {
        check_len(data.len(), shape, "QTensor")?;
        if format == MemoryFormat::ChannelsLast && shape.len() != 4 {
            return Err(Error::Shape(format!(
                "a channels-last QTensor needs a rank-4 shape, got {shape:?}"
            )));
        }
        Ok(QTensor {
            data,
            shape: shape.to_vec(),
            qparams,
            format,
        })
    }

    /// How [`Self::data`] is ordered.
    pub fn format(&self) -> MemoryFormat {
        self.format
    }

    /// The same values stored in `format` (a copy only when the format changes; a rank-4
    /// tensor only for channels-last, others stay row-major).
    pub fn to_format(&self, format: MemoryFormat) -> std::borrow::Cow<'_, QTensor> {
        use std::borrow::Cow;
        if format == self.format || self.shape.len() != 4 {
            return Cow::Borrowed(self);
        }
        let (n, c, plane) = (self.shape[0], self.shape[1], self.shape[2] * self.shape[3]);
        if c == 1 || plane == 1 {
            // The same bytes in either order (an SE block's pooled [n, c, 1, 1]).
            return Cow::Owned(QTensor {
                data: self.data.clone(),
                shape: self.shape.clone(),
                qparams: self.qparams,
                format,
            });
        }
        // Per image, NCHW is a [c, plane] matrix and NHWC its transpose.
        let (rows, cols) = match format {
            MemoryFormat::ChannelsLast => (c, plane),
            MemoryFormat::Contiguous => (plane, c),
        };
        let mut data = Buffer::new(self.data.len());
        let image = c * plane;
        for (src, dst) in self
            .data
            .chunks_exact(image)
            .zip(data.chunks_exact_mut(image))
            .take(n)
        {
            for (r, row) in src.chunks_exact(cols).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    dst[k * rows + r] = v;
                }
            }
        }
        Cow::Owned(QTensor {
            data,
            shape: self.shape.clone(),
            qparams: self.qparams,
            format,
        })
    }

    /// The same values in row-major (NCHW) order.
    pub fn to_contiguous(&self) -> std::borrow::Cow<'_, QTensor> {
        self.to_format(MemoryFormat::Contiguous)
    }

    /// `torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)`, `QUANTIZE_CHUNK`
    /// values per task.
    pub fn quantize(x: &[f32], shape: &[usize], qparams: QParamsPt) -> Result<Self> {
        check_len(x.len(), shape, "QTensor::quantize")?;
        let inv = 1.0f32 / qparams.scale;
        let mut data = Buffer::new(x.len());
        // In parallel: at batch 32 the input is 19 MB of f32 (the quantize is elementwise, so
        // the chunks are exact).
        super::kernels::for_each_block(&mut data, QUANTIZE_CHUNK, |i, out| {
            let x = &x[i * QUANTIZE_CHUNK..][..out.len()];
            super::kernels::quantize::quantize(x, inv, qparams.zero_point, out)
        });
        Ok(QTensor {
            data,
            shape: shape.to_vec(),
            qparams,
            format: MemoryFormat::Contiguous,
        })
    }

    /// `self.dequantize()`: `scale * (q - zero_point)` in f32, row-major (NCHW) whatever the
    /// memory format.
    pub fn dequantize(&self) -> Vec<f32> {
        let (s, z) = (self.qparams.scale, self.qparams.zero_point);
        self.to_contiguous()
            .data
            .iter()
            .map(|&q| s * (q as i32 - z) as f32)
            .collect()
    }

    /// The raw quint8 values (`int_repr()`) in the tensor's [`MemoryFormat`].
    pub fn data(&self) -> &[u8] {
        &self.data[..]
    }

    /// Consumes the tensor, returning its raw values in its [`MemoryFormat`].
    pub fn into_data(self) -> Vec<u8> {
        self.data.into_vec()
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Scale and zero-point.
    pub fn qparams(&self) -> QParamsPt {
        self.qparams
    }
}

/// Quantization parameters of a qint8 weight.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightQParams {
    /// `per_tensor_affine`: one scale and zero-point.
    PerTensor {
        /// Scale.
        scale: f32,
        /// Zero-point in `[-128, 127]`.
        zero_point: i32,
    },
    /// `per_channel_affine` along axis 0 (output channels).
    PerChannel {
        /// One scale per output channel.
        scales: Vec<f32>,
        /// One zero-point per output channel, each in `[-128, 127]`.
        zero_points: Vec<i32>,
    },
}

impl WeightQParams {
    /// `(scale, zero_point)` of output channel `c`.
    #[inline]
    pub fn channel(&self, c: usize) -> (f32, i32) {
        match self {
            WeightQParams::PerTensor { scale, zero_point } => (*scale, *zero_point),
            WeightQParams::PerChannel {
                scales,
                zero_points,
            } => (scales[c], zero_points[c]),
        }
    }

    /// Whether the weights are per-channel.
    pub fn is_per_channel(&self) -> bool {
        matches!(self, WeightQParams::PerChannel { .. })
    }
}

/// A qint8 weight tensor (`[out, in/groups, kh, kw]` for convolutions, `[out, in]` for linear).
#[derive(Debug, Clone, PartialEq)]
pub struct QWeight {
    data: Vec<i8>,
    shape: Vec<usize>,
    qparams: WeightQParams,
}

impl QWeight {
    /// Wraps raw qint8 values; checks the shape and the qparams (count, positive finite scales,
    /// zero-points in `[-128, 127]`).
    pub fn from_raw(data: Vec<i8>, shape: &[usize], qparams: WeightQParams) -> Result<Self> {
        check_len(data.len(), shape, "QWeight")?;
        let out = *shape
            .first()
            .ok_or_else(|| Error::Shape("QWeight: a weight needs at least one dimension".into()))?;
        let (scales, zps): (&[f32], &[i32]) = match &qparams {
            WeightQParams::PerTensor { scale, zero_point } => (
                std::slice::from_ref(scale),
                std::slice::from_ref(zero_point),
            ),
            WeightQParams::PerChannel {
                scales,
                zero_points,
            } => {
                if scales.len() != out || zero_points.len() != out {
                    return Err(Error::Quant(format!(
                        "per-channel weight with {out} output channels has {} scales and {} \
                         zero-points",
                        scales.len(),
                        zero_points.len()
                    )));
                }
                (scales, zero_points)
            }
        };
        for &s in scales {
            check_scale(s)?;
        }
        if let Some(z) = zps.iter().find(|z| !(-128..=127).contains(*z)) {
            return Err(Error::Quant(format!(
                "qint8 zero_point must be in [-128, 127], got {z}"
            )));
        }
        Ok(QWeight {
            data,
            shape: shape.to_vec(),
            qparams,
        })
    }

    /// The values clamped to `[quant_min, quant_max]` (PyTorch's `_clamp_weights` after
    /// `_quantize_weight`, for a weight observer narrower than qint8, e.g. 4-bit `[-8, 7]`);
    /// unchanged for the full range.
    pub fn clamped(mut self, quant_min: i64, quant_max: i64) -> Self {
        let lo = quant_min.clamp(-128, 127) as i8;
        let hi = quant_max.clamp(-128, 127) as i8;
        for v in &mut self.data {
            *v = (*v).max(lo).min(hi);
        }
        self
    }

    /// `torch.quantize_per_tensor(w, scale, zero_point, torch.qint8)`.
    pub fn quantize_per_tensor(
        w: &[f32],
        shape: &[usize],
        scale: f32,
        zero_point: i32,
    ) -> Result<Self> {
        let qparams = WeightQParams::PerTensor { scale, zero_point };
        Self::quantize(w, shape, qparams)
    }

    /// `torch.quantize_per_channel(w, scales, zero_points, axis=0, dtype=torch.qint8)`.
    pub fn quantize_per_channel(
        w: &[f32],
        shape: &[usize],
        scales: &[f32],
        zero_points: &[i32],
    ) -> Result<Self> {
        let qparams = WeightQParams::PerChannel {
            scales: scales.to_vec(),
            zero_points: zero_points.to_vec(),
        };
        Self::quantize(w, shape, qparams)
    }

    fn quantize(w: &[f32], shape: &[usize], qparams: WeightQParams) -> Result<Self> {
        // Validate first (with placeholder data of the right length).
        let checked = QWeight::from_raw(vec![0; w.len()], shape, qparams)?;
        let per_out = w.len() / shape[0].max(1);
        let data = w
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (s, z) = checked.qparams.channel(i / per_out.max(1));
                quantize_val(v, 1.0f32 / s, z, -128, 127) as i8
            })
            .collect();
        Ok(QWeight { data, ..checked })
    }

    /// `w.dequantize()`: `scale_c * (q - zp_c)` in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let per_out = self.data.len() / self.shape[0].max(1);
        self.data
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let (s, z) = self.qparams.channel(i / per_out.max(1));
                s * (q as i32 - z) as f32
            })
            .collect()
    }

    /// The raw qint8 values (`int_repr()`).
    pub fn data(&self) -> &[i8] {
        &self.data
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The quantization parameters.
    pub fn qparams(&self) -> &WeightQParams {
        &self.qparams
    }

    /// Number of output channels (`shape[0]`).
    pub fn out_channels(&self) -> usize {
        self.shape[0]
    }
}
