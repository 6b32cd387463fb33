//! The two qparams formulas of [`super::qparams`] as device tensor ops, element per channel
//! (per-tensor: one element), for the generic path (`crate::ops::has_cpu_kernels` false), where
//! scale and zero-point stay on the device during training and are read back once, at convert.
//!
//! Both follow the host formulas step for step in f32. The host fbgemm formula computes some
//! steps in f64 (the scale's `(max − min) / (qmax − qmin)`, the zero-point candidates); here
//! they are f32, so a scale can differ in its last bit and, for a candidate within an f32
//! rounding of a .5 tie, a zero-point by one — within the tolerances the GPU parity tests use
//! (scales 1e-6 relative, zero-points exact on the fixtures). GPU division is not always
//! correctly rounded either (WGSL allows 2.5 ulp).

use burn::tensor::{Bool, Tensor};

use super::qparams::{ObserverQParamsSpec, SMALL_SCALE_THRESHOLD};

/// `(scale, zero_point)` tensors, the zero-point as f32 integers.
pub(crate) type DeviceQParams = (Tensor<1>, Tensor<1>);

/// The Python observer formula ([`super::qparams::observer_qparams`]) per element; an element
/// not observed yet (`min = +inf`) gets PyTorch's default scale 1, zero-point 0 (without the
/// host formula's warning).
pub(crate) fn observer_qparams(
    min: Tensor<1>,
    max: Tensor<1>,
    spec: &ObserverQParamsSpec,
) -> DeviceQParams {
    let (qmin, qmax) = (spec.quant_min, spec.quant_max);
    let unobserved = min.clone().equal_elem(f32::INFINITY);
    let min_neg = min.clamp_max(0.0);
    let max_pos = max.clamp_min(0.0);
    let (scale, zero_point) = if spec.qscheme.is_symmetric() {
        let amax = min_neg.neg().max_pair(max_pos);
        let half_range = ((qmax - qmin) as f64 / 2.0) as f32;
        let scale = amax.div_scalar(half_range).clamp_min(spec.eps);
        let zp = if spec.dtype.is_unsigned() {
            if spec.has_customized_qrange {
                (qmin + qmax).div_euclid(2)
            } else {
                128
            }
        } else {
            0
        };
        let zero_point = scale.zeros_like().add_scalar(zp as f32);
        (scale, zero_point)
    } else {
        let span = (qmax - qmin) as f64 as f32;
        let scale = max_pos
            .sub(min_neg.clone())
            .div_scalar(span)
            .clamp_min(spec.eps);
        let zero_point = min_neg
            .div(scale.clone())
            .round()
            .neg()
            .add_scalar(qmin as f32)
            .clamp(qmin as f32, qmax as f32);
        (scale, zero_point)
    };
    (
        scale.mask_fill(unobserved.clone(), 1.0),
        zero_point.mask_fill(unobserved, 0.0),
    )
}

/// `min < 0 < max` per element.
fn straddles_zero(min: &Tensor<1>, max: &Tensor<1>) -> Tensor<1, Bool> {
    min.clone()
        .lower_elem(0.0)
        .bool_and(max.clone().greater_elem(0.0))
}

/// fbgemm's `ChooseQuantizationParams` ([`super::qparams::fbgemm_choose_qparams`]) per element
/// of finite running `min`/`max`, `preserve_sparsity = symmetric` as the fused fake-quant calls
/// it. Elements with an infinite range give meaningless values; the caller masks them.
pub(crate) fn fbgemm_qparams(
    min: Tensor<1>,
    max: Tensor<1>,
    quant_min: i64,
    quant_max: i64,
    symmetric: bool,
) -> DeviceQParams {
    let (qmin, qmax) = (quant_min as i32, quant_max as i32);
    let (mut min, mut max) = (min, max);
    if symmetric {
        let symmetric_qmin = -((qmax - qmin) / 2 + 1) as f32;
        let symmetric_qmax = ((qmax - qmin) / 2) as f32;
        let straddles = straddles_zero(&min, &max);
        let a = min.clone().div_scalar(symmetric_qmin).abs();
        let b = max.clone().div_scalar(symmetric_qmax).abs();
        let max_scale = a.max_pair(b);
        min = min.mask_where(
            straddles.clone(),
            max_scale.clone().mul_scalar(symmetric_qmin),
        );
        max = max.mask_where(straddles, max_scale.mul_scalar(symmetric_qmax));
    }
    min = min.clamp_max(0.0);
    max = max.clamp_min(0.0);

    let span = (qmax - qmin) as f32;
    let scale = max.clone().sub(min.clone()).div_scalar(span);
    let degenerate = scale
        .clone()
        .equal_elem(0.0)
        .bool_or(scale.clone().recip().is_inf());
    let scale = scale.mask_fill(degenerate, 0.1);

    // Below fbgemm's threshold the scale is raised to it and the range stretched to match.
    let small = scale.clone().lower_elem(SMALL_SCALE_THRESHOLD);
    let stretched = SMALL_SCALE_THRESHOLD * span;
    let amplifier = scale
        .ones_like()
        .mul_scalar(SMALL_SCALE_THRESHOLD)
        .div(scale.clone());
    let (min_zero, max_zero) = (min.clone().equal_elem(0.0), max.clone().equal_elem(0.0));
    let small_min = min
        .clone()
        .mul(amplifier.clone())
        .mask_fill(max_zero.clone(), -stretched)
        .mask_where(min_zero.clone(), min.clone());
    let small_max = max
        .clone()
        .mul(amplifier)
        .mask_where(max_zero, max.clone())
        .mask_fill(min_zero, stretched);
    let min = min.mask_where(small.clone(), small_min);
    let max = max.mask_where(small.clone(), small_max);
    let scale = scale.mask_fill(small, SMALL_SCALE_THRESHOLD);

    let min_q = min.clone().div(scale.clone());
    let max_q = max.clone().div(scale.clone());
    let from_min = min_q.clone().neg().add_scalar(qmin as f32);
    let from_max = max_q.clone().neg().add_scalar(qmax as f32);
    let error_min = min_q.abs().add_scalar(qmin.abs() as f32);
    let error_max = max_q.abs().add_scalar(qmax.abs() as f32);
    let mut initial = from_max.mask_where(error_min.lower(error_max), from_min);
    if symmetric {
        let middle = (f64::from(qmin + qmax) / 2.0) as f32;
        initial = initial.mask_fill(straddles_zero(&min, &max), middle);
    }
    let zero_point = initial.clamp(qmin as f32, qmax as f32).round();
    (scale, zero_point)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::super::qparams::{
        ObserverQParamsSpec, fbgemm_qparams as host_fbgemm, observer_qparams as host_observer,
    };
    use super::super::scheme::{QScheme, QuantDtype};
    use crate::state::host_read::read_f32;

    /// Running ranges that reach every branch: both signs, one-signed, zero-width, tiny (below
    /// fbgemm's scale threshold), large, and values near zero-point ties.
    fn ranges() -> (Vec<f32>, Vec<f32>) {
        let mut min = vec![
            -1.0, 0.0, -3.5, 0.25, -0.0, -1e-6, 0.0, -2e-3, -7.3, -0.1, 0.0,
        ];
        let mut max = vec![1.0, 0.0, -0.5, 4.0, 2.0, 3e-6, 1e-6, 0.0, 1e4, 0.1, 1e-8];
        for i in 0..200 {
            let a = ((i * 7919) % 1013) as f32 / 97.0 - 6.0;
            let b = a + ((i * 104_729) % 991) as f32 / 113.0;
            min.push(a);
            max.push(b);
        }
        (min, max)
    }

    fn tensor(v: &[f32], device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    /// The Python formula on the device is the host one, bit for bit (both f32 throughout),
    /// the unobserved default included.
    #[test]
    fn observer_formula_matches_the_host() {
        let device = Device::flex();
        let (mut min, mut max) = ranges();
        for (dtype, qscheme, range) in [
            (QuantDtype::QUInt8, QScheme::PerTensorAffine, (0, 255)),
            (QuantDtype::QUInt8, QScheme::PerTensorAffine, (0, 127)),
            (QuantDtype::QInt8, QScheme::PerChannelSymmetric, (-128, 127)),
            (QuantDtype::QUInt8, QScheme::PerTensorSymmetric, (0, 255)),
        ] {
            for custom in [false, true] {
                let spec = ObserverQParamsSpec {
                    qscheme,
                    dtype,
                    quant_min: range.0,
                    quant_max: range.1,
                    has_customized_qrange: custom,
                    eps: f32::EPSILON,
                };
                let host = host_observer(&min, &max, &spec).unwrap();
                let (s, z) =
                    super::observer_qparams(tensor(&min, &device), tensor(&max, &device), &spec);
                let what = format!("{qscheme:?} {range:?} custom {custom}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&read_f32(s)), bits(&host.scale), "scale, {what}");
                let zp: Vec<i64> = read_f32(z).iter().map(|&v| v as i64).collect();
                assert_eq!(zp, host.zero_point, "zero-point, {what}");
            }
        }
        min.push(f32::INFINITY);
        max.push(f32::NEG_INFINITY);
        let spec = ObserverQParamsSpec {
            qscheme: QScheme::PerChannelAffine,
            dtype: QuantDtype::QUInt8,
            quant_min: 0,
            quant_max: 255,
            has_customized_qrange: false,
            eps: f32::EPSILON,
        };
        let (s, z) = super::observer_qparams(tensor(&min, &device), tensor(&max, &device), &spec);
        assert_eq!(read_f32(s).last(), Some(&1.0));
        assert_eq!(read_f32(z).last(), Some(&0.0));
    }

    /// The fbgemm formula in f32 against the host's (f64 in places): scales within one f32
    /// rounding, zero-points equal.
    #[test]
    fn fbgemm_formula_matches_the_host_within_f32_rounding() {
        let device = Device::flex();
        let (min, max) = ranges();
        for (range, symmetric) in [
            ((0, 255), false),
            ((0, 127), false),
            ((-128, 127), true),
            ((-128, 127), false),
            ((0, 255), true),
        ] {
            let host = host_fbgemm(&min, &max, range.0, range.1, symmetric);
            let (s, z) = super::fbgemm_qparams(
                tensor(&min, &device),
                tensor(&max, &device),
                range.0,
                range.1,
                symmetric,
            );
            let (s, z) = (read_f32(s), read_f32(z));
            for i in 0..min.len() {
                let what = format!("{range:?} symmetric {symmetric}: [{}, {}]", min[i], max[i]);
                let rel = ((s[i] - host.scale[i]) / host.scale[i]).abs();
                assert!(
                    rel <= 2.0 * f32::EPSILON,
                    "scale {} vs {}, {what}",
                    s[i],
                    host.scale[i]
                );
                assert_eq!(z[i] as i64, host.zero_point[i], "zero-point, {what}");
            }
        }
    }
}
