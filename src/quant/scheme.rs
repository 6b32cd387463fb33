//! Quantized data types, quantization schemes and integer ranges.
//!
//! Mirrors the dtype/qscheme vocabulary of `torch.ao.quantization` (torch 2.5.1) and the range
//! computation of `torch.ao.quantization.utils.calculate_qmin_qmax` (used by
//! `UniformQuantizationObserverBase.__init__`).

use burn::config::Config;

use crate::{Error, Result};

/// The integer type a tensor is quantized to (PyTorch's `torch.quint8`, `torch.qint8`,
/// `torch.qint32`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum QuantDtype {
    /// Unsigned 8-bit, full range `[0, 255]` (`torch.quint8`).
    QUInt8,
    /// Signed 8-bit, full range `[-128, 127]` (`torch.qint8`).
    QInt8,
    /// Signed 32-bit, full range `[-2^31, 2^31 - 1]` (`torch.qint32`).
    QInt32,
}

impl QuantDtype {
    /// The full representable range of the type, `(min, max)` (`torch.iinfo(dtype)`).
    pub fn bounds(self) -> (i64, i64) {
        match self {
            QuantDtype::QUInt8 => (0, 255),
            QuantDtype::QInt8 => (-128, 127),
            QuantDtype::QInt32 => (i32::MIN as i64, i32::MAX as i64),
        }
    }

    /// Number of bits (`torch.iinfo(dtype).bits`).
    pub fn bits(self) -> u32 {
        match self {
            QuantDtype::QUInt8 | QuantDtype::QInt8 => 8,
            QuantDtype::QInt32 => 32,
        }
    }

    /// Whether the type is unsigned (`quint8`).
    pub fn is_unsigned(self) -> bool {
        matches!(self, QuantDtype::QUInt8)
    }
}

/// How scale and zero-point are shared and derived (PyTorch's `torch.qscheme`).
#[allow(clippy::enum_variant_names)] // PyTorch's names
#[derive(Debug, Clone, Copy, PartialEq, Eq, burn::serde::Serialize, burn::serde::Deserialize)]
#[serde(crate = "burn::serde")]
pub enum QScheme {
    /// One scale and zero-point for the whole tensor (`torch.per_tensor_affine`).
    PerTensorAffine,
    /// One scale for the whole tensor, zero-point fixed at the middle of the range
    /// (`torch.per_tensor_symmetric`).
    PerTensorSymmetric,
    /// One scale and zero-point per slice along the channel axis (`torch.per_channel_affine`).
    PerChannelAffine,
    /// One scale per slice along the channel axis, fixed zero-point
    /// (`torch.per_channel_symmetric`).
    PerChannelSymmetric,
}

impl QScheme {
    /// Whether the scheme has one qparam pair per channel.
    pub fn is_per_channel(self) -> bool {
        matches!(
            self,
            QScheme::PerChannelAffine | QScheme::PerChannelSymmetric
        )
    }

    /// Whether the scheme is symmetric (zero-point not derived from the data).
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric
        )
    }
}

/// The effective integer range `[quant_min, quant_max]`, as PyTorch's observers compute it.
///
/// `calculate_qmin_qmax(quant_min, quant_max, has_customized_qrange, dtype, reduce_range)`:
/// - with a custom range `(qmin, qmax)`: the range is validated (`qmin <= 0 <= qmax`,
///   `qmin < qmax`, at most 256 values for 8-bit types) and, with `reduce_range`, halved by floor
///   division (`qmin // 2, qmax // 2`, so `[0, 255]` becomes `[0, 127]`);
/// - without one: `quint8` gives `[0, 255]` (`[0, 127]` reduced), `qint8` `[-128, 127]`
///   (`[-64, 63]` reduced), `qint32` `[-2^31, 2^31 - 1]`.
pub fn calculate_qmin_qmax(
    dtype: QuantDtype,
    custom_range: Option<(i64, i64)>,
    reduce_range: bool,
) -> Result<(i64, i64)> {
    match custom_range {
        Some((qmin, qmax)) => {
            // `_validate_qmin_qmax` and the `FakeQuantize` bound checks.
            if !(qmin <= 0 && 0 <= qmax) {
                return Err(Error::Config(format!(
                    "quantization range [{qmin}, {qmax}] must include 0"
                )));
            }
            if qmin >= qmax {
                return Err(Error::Config(format!(
                    "quant_min ({qmin}) must be strictly less than quant_max ({qmax})"
                )));
            }
            let (lo, hi) = dtype.bounds();
            if qmin < lo || qmax > hi {
                return Err(Error::Config(format!(
                    "quantization range [{qmin}, {qmax}] is outside the {dtype:?} range [{lo}, {hi}]"
                )));
            }
            if reduce_range {
                Ok((qmin.div_euclid(2), qmax.div_euclid(2)))
            } else {
                Ok((qmin, qmax))
            }
        }
        None => Ok(match (dtype, reduce_range) {
            (QuantDtype::QInt8, true) => (-64, 63),
            (QuantDtype::QInt8, false) => (-128, 127),
            (QuantDtype::QUInt8, true) => (0, 127),
            (QuantDtype::QUInt8, false) => (0, 255),
            (QuantDtype::QInt32, _) => (i32::MIN as i64, i32::MAX as i64),
        }),
    }
}
