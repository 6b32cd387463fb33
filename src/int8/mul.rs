//! Quantized elementwise multiply (`FloatFunctional.mul` after convert = `QFunctional.mul`,
//! i.e. `quantized::mul` / `quantized::mul_relu`, `aten/src/ATen/native/quantized/cpu/qmul.cpp`),
//! with NumPy broadcasting (MobileNetV3's squeeze-excitation scales `[N, C, H, W]` by
//! `[N, C, 1, 1]`).
//!
//! Both engines run the native ATen kernel for quint8 (`qmul_kernel` in
//! `QuantizedOpKernels.cpp`; qnnpack has no quint8 mul), vector body and scalar tail alike:
//! ```text
//! m = (s_a · s_b) · (1.0f / s_y)                                   // f32, left to right
//! y = clamp(nearbyint((float)((q_a − z_a)·(q_b − z_b)) · m) + z_y, lo, 255)
//! ```
//! with `lo = z_y` for `mul_relu`, else 0. Held to PyTorch 2.5.1 on both engines
//! (`tests/it/functional_int8.rs`). Where `|(q_a − z_a)(q_b − z_b) · m|` passes 2³⁰ (an output
//! scale 30 000 times below the inputs' product) the result saturates to 0 or 255; PyTorch's
//! vector body gives 0 for such a positive value (its `vcvtps2dq` overflows), its tail 255.

use std::borrow::Cow;

use super::buffer::Buffer;
use super::kernels::bytewise::ByteKernels;
use super::tensor::{MemoryFormat, QParamsPt, QTensor};
use crate::numerics::round_half_even;
use crate::{Error, Result};

/// The per-call arithmetic of a multiply, for the qparams of its two inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MulParams {
    /// `z_a`.
    pub a_zero_point: i32,
    /// `z_b`.
    pub b_zero_point: i32,
    /// `(s_a · s_b) · (1.0f / s_y)`.
    pub multiplier: f32,
    /// `z_y`.
    pub zero_point: i32,
    /// The least output (`z_y` with a fused ReLU, else 0).
    pub lo: u8,
}

/// Beyond this magnitude every product saturates to 0 or 255 whatever the zero-point; vector
/// kernels clamp to it before converting to integers, so that they agree with [`MulParams::apply`].
pub const MUL_SATURATION: f32 = (1u32 << 30) as f32;

impl MulParams {
    /// Multiplies one pair of quint8 values.
    #[inline]
    pub fn apply(&self, qa: u8, qb: u8) -> u8 {
        let product = (qa as i32 - self.a_zero_point) * (qb as i32 - self.b_zero_point);
        let t = (product as f32 * self.multiplier).clamp(-MUL_SATURATION, MUL_SATURATION);
        let y = round_half_even(t) as i64 + self.zero_point as i64;
        y.clamp(self.lo as i64, 255) as u8
    }
}

/// A quantized multiply with its own output qparams (`QFunctional.scale` / `zero_point`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Mul {
    output: QParamsPt,
    relu: bool,
}

impl Int8Mul {
    /// A multiply producing `output` qparams, with a fused ReLU (`mul_relu`) when `relu`.
    pub fn new(output: QParamsPt, relu: bool) -> Self {
        Int8Mul { output, relu }
    }

    /// Output scale and zero-point.
    pub fn output_qparams(&self) -> QParamsPt {
        self.output
    }

    /// The arithmetic for inputs with qparams `a` and `b`; an error where the multiplier is
    /// not finite (scales whose ratio overflows f32).
    pub fn params(&self, a: QParamsPt, b: QParamsPt) -> Result<MulParams> {
        let y = self.output;
        let multiplier = a.scale * b.scale * (1.0f32 / y.scale);
        if !multiplier.is_finite() {
            return Err(Error::Quant(format!(
                "quantized mul: the multiplier s_a·s_b/s_y of scales {}, {} and {} is not finite",
                a.scale, b.scale, y.scale
            )));
        }
        Ok(MulParams {
            a_zero_point: a.zero_point,
            b_zero_point: b.zero_point,
            multiplier,
            zero_point: y.zero_point,
            lo: if self.relu { y.zero_point as u8 } else { 0 },
        })
    }

    /// Multiplies on the fastest kernels.
    pub fn forward(&self, a: &QTensor, b: &QTensor) -> Result<QTensor> {
        self.forward_with(ByteKernels::detect(), a, b)
    }

    /// `a * b` with the given kernels. The shapes must have the same rank and, per dimension,
    /// be equal or 1 on one side (the output takes the larger). Equal shapes keep `a`'s memory
    /// format; a broadcast takes the format of the operand with the output's shape.
    pub fn forward_with(&self, kernels: ByteKernels, a: &QTensor, b: &QTensor) -> Result<QTensor> {
        let p = self.params(a.qparams(), b.qparams())?;
        if a.shape() == b.shape() {
            let b = b.to_format(a.format());
            let mut out = Buffer::new(a.data().len());
            kernels.mul(&p, a.data(), b.data(), &mut out);
            return QTensor::from_buffer(out, a.shape(), self.output, a.format());
        }
        let shape = broadcast_shape(a.shape(), b.shape())?;
        // Computed in the memory format of the operand that has the output's shape (the SE
        // block's activation, channels-last after a convolution), so that only the broadcast
        // one is rearranged.
        let format = [a, b]
            .iter()
            .find(|x| x.shape() == shape.as_slice())
            .map_or(MemoryFormat::Contiguous, |x| x.format());
        let (a, b) = (expand(a, &shape, format), expand(b, &shape, format));
        let mut out = Buffer::new(a.len());
        kernels.mul(&p, &a, &b, &mut out);
        QTensor::from_buffer(out, &shape, self.output, format)
    }
}

/// The broadcast shape of `a` and `b` (same rank; each dimension equal, or 1 on one side), or
/// an error naming both shapes; its element count is checked against memory.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let mismatch = || {
        Error::Shape(format!(
            "quantized mul: shapes {a:?} and {b:?} do not broadcast (same rank, each \
             dimension equal or 1 on one side)"
        ))
    };
    if a.len() != b.len() {
        return Err(mismatch());
    }
    let shape = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(mismatch()),
        })
        .collect::<Result<Vec<_>>>()?;
    crate::limits::check_fits(crate::limits::product(shape.iter().map(|&d| d as u64)))
        .map_err(|e| Error::Shape(format!("quantized mul: output shape {shape:?}: {e}")))?;
    Ok(shape)
}

/// The bytes of `x` repeated along its size-1 dimensions up to `shape` (same rank, each
/// dimension of `x` 1 or `shape`'s), laid out in `format`; `x`'s own bytes where nothing moves.
fn expand<'a>(x: &'a QTensor, shape: &[usize], format: MemoryFormat) -> Cow<'a, [u8]> {
    if x.shape() == shape && x.format() == format {
        return Cow::Borrowed(x.data());
    }
    let rank = shape.len();
    // Where each logical dimension steps in `x`'s storage, 0 along broadcast dimensions.
    let mut strides = vec![0usize; rank];
    let mut stride = 1;
    for &d in storage_order(x.format(), rank).iter().rev() {
        if x.shape()[d] != 1 || shape[d] == 1 {
            strides[d] = stride;
        }
        stride *= x.shape()[d];
    }
    let order = storage_order(format, rank);
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    let Some((&inner, outer)) = order.split_last() else {
        return Cow::Owned(x.data().to_vec());
    };
    let (len, step, data) = (shape[inner], strides[inner], x.data());
    let rows: usize = outer.iter().map(|&d| shape[d]).product();
    let mut index = vec![0usize; outer.len()];
    for _ in 0..rows {
        let start: usize = index.iter().zip(outer).map(|(i, &d)| i * strides[d]).sum();
        match step {
            0 => out.extend(std::iter::repeat_n(data[start], len)),
            1 => out.extend_from_slice(&data[start..][..len]),
            _ => out.extend((0..len).map(|i| data[start + i * step])),
        }
        // Next row: an odometer over the outer dimensions, in storage order.
        for (i, &d) in index.iter_mut().zip(outer).rev() {
            *i += 1;
            if *i < shape[d] {
                break;
            }
            *i = 0;
        }
    }
    Cow::Owned(out)
}

/// The logical dimensions from outermost to innermost in `format`'s storage.
fn storage_order(format: MemoryFormat, rank: usize) -> Vec<usize> {
    match format {
        MemoryFormat::ChannelsLast if rank == 4 => vec![0, 2, 3, 1],
        _ => (0..rank).collect(),
    }
}
