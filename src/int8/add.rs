//! Quantized elementwise add (`FloatFunctional.add` after convert = `QFunctional.add`, i.e.
//! `quantized::add` / `quantized::add_relu`, `aten/src/ATen/native/quantized/cpu/qadd.cpp`).
//!
//! # qnnpack (`qnnpack_add`, `pytorch_qnnp_compute_add_quantization_params`, `q8vadd` kernels)
//! Fixed point, rounding half away from zero:
//! ```text
//! r_a = s_a / s_y,  r_b = s_b / s_y                 // f32, each must lie in [2^-14, 2^8)
//! e     = exponent(max(r_a, r_b));  shift = 21 − e  // in [13, 35), must be < 32
//! m_a   = lrintf(r_a · 2^shift),  m_b = lrintf(r_b · 2^shift)
//! acc   = −(m_a·z_a + m_b·z_b) + q_a·m_a + q_b·m_b  // wrapping i32
//! y     = clamp(round_half_away(acc / 2^shift) + z_y, lo, hi)
//! ```
//!
//! # x86 (`qadd_kernel` in `QuantizedOpKernels.cpp`, vectorized path)
//! ```text
//! d_a = fma(s_a, q_a, s_a · (−z_a))      // Vectorized<quint8>::dequantize with premultiplied zp
//! d_b = fma(s_b, q_b, s_b · (−z_b))
//! c   = d_a + d_b  (ReLU: max(c, 0))
//! y   = clamp(nearbyint(c · (1.0f / s_y)) + z_y, 0, 255)
//! ```
//! PyTorch's scalar tail (the last `numel mod 2·Vec::size()` elements of a contiguous tensor: 128
//! on AVX-512 builds, 64 on AVX2) dequantizes without the fma, `(q − z)·s`; the reference uses the
//! fma everywhere (see the int8_add tests for how rarely the two differ).

use super::buffer::Buffer;
use super::engine::Engine;
use super::kernels::{DEFAULT, Int8Kernels};
use super::requant::saturate_to_u8;
use super::tensor::{QParamsPt, QTensor, round_half_even};
use crate::{Error, Result};

/// Per-call arithmetic of an add, for the qparams of its two inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AddParams {
    /// qnnpack's fixed-point parameters.
    Qnnpack {
        /// `−(m_a·z_a + m_b·z_b)` (wrapping).
        zero_point_product: i32,
        /// `m_a`.
        a_multiplier: u32,
        /// `m_b`.
        b_multiplier: u32,
        /// Right shift.
        shift: u32,
        /// Output zero-point.
        zero_point: i32,
        /// Output lower bound (`z_y` with ReLU, else 0).
        lo: u8,
    },
    /// The native ATen kernel's float parameters.
    X86 {
        /// `s_a`, `s_a · (−z_a)`.
        a: (f32, f32),
        /// `s_b`, `s_b · (−z_b)`.
        b: (f32, f32),
        /// `1.0f / s_y`.
        inv_scale: f32,
        /// Output zero-point.
        zero_point: i32,
        /// Fused ReLU.
        relu: bool,
    },
}

impl AddParams {
    /// Adds one pair of quint8 values.
    #[inline]
    pub fn apply(&self, qa: u8, qb: u8) -> u8 {
        match *self {
            AddParams::Qnnpack {
                zero_point_product,
                a_multiplier,
                b_multiplier,
                shift,
                zero_point,
                lo,
            } => {
                let acc = zero_point_product
                    .wrapping_add((qa as u32).wrapping_mul(a_multiplier) as i32)
                    .wrapping_add((qb as u32).wrapping_mul(b_multiplier) as i32);
                let mask = ((1u32 << shift) - 1) as i32;
                let threshold = mask >> 1;
                let rem = (acc & mask) - (acc < 0) as i32;
                let r = (acc >> shift) + (rem > threshold) as i32;
                saturate_to_u8(r, zero_point, lo, 255)
            }
            AddParams::X86 {
                a,
                b,
                inv_scale,
                zero_point,
                relu,
            } => {
                let da = a.0.mul_add(qa as f32, a.1);
                let db = b.0.mul_add(qb as f32, b.1);
                let mut c = da + db;
                if relu {
                    c = c.max(0.0);
                }
                let t = round_half_even(c * inv_scale) as i64 + zero_point as i64;
                t.clamp(0, 255) as u8
            }
        }
    }
}

/// A quantized add with its own output qparams (`QFunctional.scale` / `zero_point`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Add {
    output: QParamsPt,
    relu: bool,
    engine: Engine,
}

impl Int8Add {
    /// An add producing `output` qparams, with a fused ReLU (`add_relu`) when `relu`.
    pub fn new(output: QParamsPt, relu: bool, engine: Engine) -> Self {
        Int8Add {
            output,
            relu,
            engine,
        }
    }

    /// The arithmetic for inputs with qparams `a` and `b`. qnnpack rejects scale ratios
    /// `s_a / s_y` or `s_b / s_y` outside `[2^-14, 2^8)`, as PyTorch does.
    pub fn params(&self, a: QParamsPt, b: QParamsPt) -> Result<AddParams> {
        let y = self.output;
        match self.engine {
            Engine::Qnnpack => {
                let ra = a.scale / y.scale;
                let rb = b.scale / y.scale;
                for r in [ra, rb] {
                    if !(2f32.powi(-14)..256.0).contains(&r) {
                        return Err(Error::Quant(format!(
                            "qnnpack add: input/output scale ratio {r:e} is outside \
                             [2^-14, 2^8) (input scales {}, {}; output scale {})",
                            a.scale, b.scale, y.scale
                        )));
                    }
                }
                let max = ra.max(rb);
                let exponent = (max.to_bits() >> 23) as i32 - 127;
                let shift = (21 - exponent) as u32;
                let scale_multiplier = f32::from_bits(((21 - exponent + 127) as u32) << 23);
                let a_multiplier = (ra * scale_multiplier).round_ties_even() as i32 as u32;
                let b_multiplier = (rb * scale_multiplier).round_ties_even() as i32 as u32;
                let zero_point_product = (a_multiplier
                    .wrapping_mul(a.zero_point as u32)
                    .wrapping_add(b_multiplier.wrapping_mul(b.zero_point as u32)))
                .wrapping_neg() as i32;
                Ok(AddParams::Qnnpack {
                    zero_point_product,
                    a_multiplier,
                    b_multiplier,
                    shift,
                    zero_point: y.zero_point,
                    lo: if self.relu { y.zero_point as u8 } else { 0 },
                })
            }
            Engine::X86 => Ok(AddParams::X86 {
                a: (a.scale, a.scale * -(a.zero_point as f32)),
                b: (b.scale, b.scale * -(b.zero_point as f32)),
                inv_scale: 1.0f32 / y.scale,
                zero_point: y.zero_point,
                relu: self.relu,
            }),
        }
    }

    /// Adds with the default kernels ([`DEFAULT`]).
    pub fn forward(&self, a: &QTensor, b: &QTensor) -> Result<QTensor> {
        self.forward_with(&DEFAULT, a, b)
    }

    /// Adds two tensors of the same shape with the given kernels.
    pub fn forward_with(
        &self,
        kernels: &dyn Int8Kernels,
        a: &QTensor,
        b: &QTensor,
    ) -> Result<QTensor> {
        if a.shape() != b.shape() {
            return Err(Error::Shape(format!(
                "quantized add needs equal shapes, got {:?} and {:?}",
                a.shape(),
                b.shape()
            )));
        }
        let p = self.params(a.qparams(), b.qparams())?;
        // Elementwise: any memory format will do, as long as both inputs share it (the output
        // keeps the first input's, as PyTorch's).
        let b = b.to_format(a.format());
        let mut out = Buffer::new(a.data().len());
        kernels.add(&p, a.data(), b.data(), &mut out);
        QTensor::from_buffer(out, a.shape(), self.output, a.format())
    }

    /// Output scale and zero-point.
    pub fn output_qparams(&self) -> QParamsPt {
        self.output
    }
}
