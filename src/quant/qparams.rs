//! Scale / zero-point calculators.
//!
//! PyTorch uses two different formulas, and a QAT model sees both (PyTorch issue #88800):
//!
//! * [`QParamsCalculator::Observer`] — the Python observer formula,
//!   `UniformQuantizationObserverBase._calculate_qparams` in `torch/ao/quantization/observer.py`.
//!   It is what `calculate_qparams()` returns, hence what `convert` bakes into the int8 model,
//!   and what `FakeQuantize` (non-fused) uses during training.
//! * [`QParamsCalculator::Fbgemm`] — fbgemm's `ChooseQuantizationParams`
//!   (`fbgemm/src/QuantUtils.cc`, mirrored by `quant_utils::ChooseQuantizationParams` in
//!   `aten/src/ATen/native/quantized/cpu/QuantUtils.h`), which `torch.fused_moving_avg_obs_fake_quant`
//!   (`aten/src/ATen/native/quantized/cpu/fused_obs_fake_quant.cpp`) calls with
//!   `preserve_sparsity = symmetric`; this is what `FusedMovingAvgObsFakeQuantize` — the default
//!   QAT fake-quant — uses in its forward pass.
//!
//! Both are implemented with the exact float/double arithmetic of the originals so the results
//! match PyTorch to the last bit.

use burn::config::Config;

use super::scheme::{QScheme, QuantDtype};

/// Which scale / zero-point formula a fake-quant module uses in its forward pass.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum QParamsCalculator {
    /// The Python observer formula (`_calculate_qparams`), see [`observer_qparams`].
    Observer,
    /// fbgemm's `ChooseQuantizationParams`, see [`fbgemm_choose_qparams`].
    Fbgemm,
}

/// Quantization parameters: one `(scale, zero_point)` pair per tensor or per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct QParams {
    /// Scales (length 1 for per-tensor schemes).
    pub scale: Vec<f32>,
    /// Zero-points, same length as `scale`.
    pub zero_point: Vec<i64>,
}

impl QParams {
    /// PyTorch's default for an observer that has not seen data: scale 1, zero-point 0
    /// (`torch.tensor([1.0]), torch.tensor([0])`).
    pub fn default_unobserved() -> Self {
        QParams {
            scale: vec![1.0],
            zero_point: vec![0],
        }
    }

    /// Number of (scale, zero-point) pairs.
    pub fn len(&self) -> usize {
        self.scale.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }
}

/// Parameters of the Python observer formula that do not depend on the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObserverQParamsSpec {
    /// Quantization scheme (per-tensor and per-channel are computed the same way).
    pub qscheme: QScheme,
    /// Quantized dtype.
    pub dtype: QuantDtype,
    /// Effective `quant_min` (after `reduce_range`).
    pub quant_min: i64,
    /// Effective `quant_max` (after `reduce_range`).
    pub quant_max: i64,
    /// Whether the user gave `quant_min`/`quant_max` (`has_customized_qrange`).
    pub has_customized_qrange: bool,
    /// Scale floor (`eps`, default `torch.finfo(torch.float32).eps`).
    pub eps: f32,
}

/// The Python observer formula, `UniformQuantizationObserverBase._calculate_qparams`
/// (torch 2.5.1), computed in f32 exactly as the tensor ops do:
///
/// ```text
/// min_neg = min(min_val, 0);  max_pos = max(max_val, 0)
/// symmetric: scale = max(max(-min_neg, max_pos) / ((qmax - qmin) / 2), eps)
///            zero_point = 0 (qint8) | 128 (quint8) | (qmin + qmax) // 2 (quint8, custom range)
/// affine:    scale = max((max_pos - min_neg) / (qmax - qmin), eps)
///            zero_point = clamp(qmin - round_half_even(min_neg / scale), qmin, qmax)
/// ```
///
/// `min_val`/`max_val` are per-tensor (length 1) or per-channel. An observer that saw nothing
/// (`min = +inf` and `max = -inf`, or empty slices) yields [`QParams::default_unobserved`] and a
/// warning on stderr, as PyTorch's `check_min_max_valid` does. Returns `None` when some
/// `min_val > max_val` or a value is NaN (PyTorch asserts).
pub fn observer_qparams(
    min_val: &[f32],
    max_val: &[f32],
    spec: &ObserverQParamsSpec,
) -> Option<QParams> {
    if min_val.is_empty()
        || max_val.is_empty()
        || min_val.iter().all(|&m| m == f32::INFINITY)
            && max_val.iter().all(|&m| m == f32::NEG_INFINITY)
    {
        eprintln!(
            "warning: must run observer before calling calculate_qparams. Returning default values."
        );
        return Some(QParams::default_unobserved());
    }
    if min_val.len() != max_val.len()
        || min_val
            .iter()
            .zip(max_val)
            .any(|(a, b)| a.partial_cmp(b).is_none_or(|o| o.is_gt()))
    {
        return None;
    }
    let (qmin, qmax) = (spec.quant_min, spec.quant_max);
    let mut scale = Vec::with_capacity(min_val.len());
    let mut zero_point = Vec::with_capacity(min_val.len());
    for (&mn, &mx) in min_val.iter().zip(max_val) {
        let min_neg = torch_min(mn, 0.0);
        let max_pos = torch_max(mx, 0.0);
        if spec.qscheme.is_symmetric() {
            let amax = torch_max(-min_neg, max_pos);
            // `float(quant_max - quant_min) / 2` is a Python float, used as an f32 scalar.
            let half_range = ((qmax - qmin) as f64 / 2.0) as f32;
            let s = torch_max(amax / half_range, spec.eps);
            let zp = if spec.dtype.is_unsigned() {
                if spec.has_customized_qrange {
                    (qmin + qmax).div_euclid(2)
                } else {
                    128
                }
            } else {
                0
            };
            scale.push(s);
            zero_point.push(zp);
        } else {
            let s = (max_pos - min_neg) / ((qmax - qmin) as f64 as f32);
            let s = torch_max(s, spec.eps);
            let zp = qmin - (min_neg / s).round_ties_even() as i64;
            scale.push(s);
            zero_point.push(zp.clamp(qmin, qmax));
        }
    }
    Some(QParams { scale, zero_point })
}

/// `torch.min(a, b)` for finite or infinite values (NaN propagates).
fn torch_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b {
        a
    } else {
        b
    }
}

/// `torch.max(a, b)` (NaN propagates).
fn torch_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

/// fbgemm's small-scale cutoff (`SMALL_SCALE_THRESHOLD = 6.1e-5f`, the smallest normal fp16).
pub const SMALL_SCALE_THRESHOLD: f32 = 6.1e-5;

/// fbgemm `ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity,
/// force_scale_power_of_two = false)` as bundled with torch 2.5.1, bit for bit:
///
/// ```text
/// if min < 0 < max and preserve_sparsity:             // symmetric
///     sqmin = -((qmax - qmin) / 2 + 1); sqmax = (qmax - qmin) / 2
///     max_scale = max(|min / sqmin|, |max / sqmax|)   // f32 divisions, f64 result
///     min = f32(max_scale * sqmin); max = f32(max_scale * sqmax)
/// min = min(min, 0); max = max(max, 0)
/// scale = f32((f64(max) - min) / (qmax - qmin))
/// if scale == 0 or 1/scale == inf: scale = 0.1
/// if scale < 6.1e-5: scale = 6.1e-5, and min/max are stretched to match
/// zp = qmin - min/scale or qmax - max/scale (f64, whichever has the smaller error term)
/// if min < 0 < max and preserve_sparsity: zp = (qmin + qmax) / 2
/// zp = clamp to [qmin, qmax], else nearbyint (half to even)
/// ```
///
/// So for qint8 `[-128, 127]` the symmetric scale is `max(|min|/128, max/127)`, one-signed ranges
/// fall back to affine, and zero-points are nudged to integers.
pub fn fbgemm_choose_qparams(
    min: f32,
    max: f32,
    qmin: i32,
    qmax: i32,
    preserve_sparsity: bool,
) -> (f32, i32) {
    let (mut min, mut max) = (min, max);
    if min < 0.0 && max > 0.0 && preserve_sparsity {
        let symmetric_qmin = -((qmax - qmin) / 2 + 1);
        let symmetric_qmax = (qmax - qmin) / 2;
        // `min / symmetric_qmin` is float / int -> float.
        let a = (min / symmetric_qmin as f32).abs();
        let b = (max / symmetric_qmax as f32).abs();
        // std::max(a, b) returns `a` unless `a < b`.
        let max_scale = f64::from(if a < b { b } else { a });
        min = (max_scale * f64::from(symmetric_qmin)) as f32;
        max = (max_scale * f64::from(symmetric_qmax)) as f32;
    }
    // std::min(min, 0.f) / std::max(max, 0.f)
    min = if 0.0 < min { 0.0 } else { min };
    max = if max < 0.0 { 0.0 } else { max };

    let mut scale: f32 = ((f64::from(max) - f64::from(min)) / f64::from(qmax - qmin)) as f32;
    if scale == 0.0 || (1.0f32 / scale).is_infinite() {
        scale = 0.1;
    }

    if scale < SMALL_SCALE_THRESHOLD {
        let org_scale = scale;
        scale = SMALL_SCALE_THRESHOLD;
        if min == 0.0 {
            max = SMALL_SCALE_THRESHOLD * (qmax - qmin) as f32;
        } else if max == 0.0 {
            min = -SMALL_SCALE_THRESHOLD * (qmax - qmin) as f32;
        } else {
            let amplifier = SMALL_SCALE_THRESHOLD / org_scale;
            min *= amplifier;
            max *= amplifier;
        }
    }

    let s = f64::from(scale);
    let zero_point_from_min = f64::from(qmin) - f64::from(min) / s;
    let zero_point_from_max = f64::from(qmax) - f64::from(max) / s;
    let zero_point_from_min_error = f64::from(qmin.abs()) + (f64::from(min) / s).abs();
    let zero_point_from_max_error = f64::from(qmax.abs()) + (f64::from(max) / s).abs();
    let mut initial_zero_point = if zero_point_from_min_error < zero_point_from_max_error {
        zero_point_from_min
    } else {
        zero_point_from_max
    };
    if min < 0.0 && max > 0.0 && preserve_sparsity {
        initial_zero_point = f64::from(qmin + qmax) / 2.0;
    }
    let nudged_zero_point = if initial_zero_point < f64::from(qmin) {
        qmin
    } else if initial_zero_point > f64::from(qmax) {
        qmax
    } else {
        initial_zero_point.round_ties_even() as i32
    };
    (scale, nudged_zero_point)
}

/// [`fbgemm_choose_qparams`] over per-tensor (length 1) or per-channel running min/max, as
/// `choose_qparams_fake_quant` in `fused_obs_fake_quant.cpp` loops over channels.
pub fn fbgemm_qparams(
    min_val: &[f32],
    max_val: &[f32],
    quant_min: i64,
    quant_max: i64,
    symmetric: bool,
) -> QParams {
    let (scale, zero_point) = min_val
        .iter()
        .zip(max_val)
        .map(|(&mn, &mx)| {
            let (s, z) =
                fbgemm_choose_qparams(mn, mx, quant_min as i32, quant_max as i32, symmetric);
            (s, i64::from(z))
        })
        .unzip();
    QParams { scale, zero_point }
}
