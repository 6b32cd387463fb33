//! Scale / zero-point calculators against PyTorch: the Python observer formula
//! (`_calculate_qparams`) and fbgemm's `ChooseQuantizationParams` (via
//! `torch.fused_moving_avg_obs_fake_quant`), per-channel and per-tensor, bit-exact.

use crate::common::{Fixture, assert_bits};
use burn_qat::quant::{
    ObserverQParamsSpec, QScheme, QuantDtype, calculate_qmin_qmax, fbgemm_qparams, observer_qparams,
};

/// (name, dtype, symmetric, reduce_range, custom range), as `QP_CONFIGS` in the generator.
type Case = (&'static str, QuantDtype, bool, bool, Option<(i64, i64)>);

fn configs() -> Vec<Case> {
    use QuantDtype::*;
    vec![
        ("quint8_aff", QUInt8, false, false, None),
        ("quint8_aff_rr", QUInt8, false, true, None),
        ("quint8_sym", QUInt8, true, false, None),
        ("qint8_aff", QInt8, false, false, None),
        ("qint8_sym", QInt8, true, false, None),
        ("qint8_sym_rr", QInt8, true, true, None),
        ("quint8_aff_c0_255_rr", QUInt8, false, true, Some((0, 255))),
        ("quint8_sym_c0_15", QUInt8, true, false, Some((0, 15))),
        ("qint8_sym_c127", QInt8, true, false, Some((-127, 127))),
        ("qint8_aff_c128_127", QInt8, false, false, Some((-128, 127))),
    ]
}

#[test]
fn observer_formula_matches_pytorch() {
    let fx = Fixture::load("quant_qparams.safetensors");
    let (min, max) = (fx.f32("min"), fx.f32("max"));
    for (name, dtype, sym, rr, range) in configs() {
        let (qmin, qmax) = calculate_qmin_qmax(dtype, range, rr).unwrap();
        assert_eq!(
            vec![qmin, qmax],
            fx.i64(&format!("obs_{name}_qrange")),
            "{name} range"
        );
        for per_channel in [true, false] {
            let qscheme = match (per_channel, sym) {
                (true, true) => QScheme::PerChannelSymmetric,
                (true, false) => QScheme::PerChannelAffine,
                (false, true) => QScheme::PerTensorSymmetric,
                (false, false) => QScheme::PerTensorAffine,
            };
            let spec = ObserverQParamsSpec {
                qscheme,
                dtype,
                quant_min: qmin,
                quant_max: qmax,
                has_customized_qrange: range.is_some(),
                eps: f32::EPSILON,
            };
            if per_channel {
                let qp = observer_qparams(&min, &max, &spec).unwrap();
                assert_bits(&qp.scale, &fx.f32(&format!("obs_{name}_scale")), name);
                assert_eq!(
                    qp.zero_point,
                    fx.i64(&format!("obs_{name}_zp")),
                    "{name} zp"
                );
            } else {
                let (mut s, mut z) = (vec![], vec![]);
                for j in (0..min.len()).step_by(7) {
                    let qp = observer_qparams(&min[j..j + 1], &max[j..j + 1], &spec).unwrap();
                    s.push(qp.scale[0]);
                    z.push(qp.zero_point[0]);
                }
                assert_bits(&s, &fx.f32(&format!("obst_{name}_scale")), name);
                assert_eq!(
                    z,
                    fx.i64(&format!("obst_{name}_zp")),
                    "{name} per-tensor zp"
                );
            }
        }
    }
}

#[test]
fn fbgemm_formula_matches_pytorch() {
    let fx = Fixture::load("quant_qparams.safetensors");
    let (min, max) = (fx.f32("min"), fx.f32("max"));
    let mut checked = 0;
    for (qmin, qmax) in [
        (0, 255),
        (0, 127),
        (-128, 127),
        (-64, 63),
        (-127, 127),
        (0, 15),
    ] {
        for sym in [false, true] {
            let tag =
                format!("fb_{qmin}_{qmax}_{}", if sym { "sym" } else { "aff" }).replace('-', "m");
            let qp = fbgemm_qparams(&min, &max, qmin, qmax, sym);
            assert_bits(&qp.scale, &fx.f32(&format!("{tag}_scale")), &tag);
            assert_eq!(qp.zero_point, fx.i64(&format!("{tag}_zp")), "{tag} zp");
            let idx: Vec<usize> = (0..min.len()).step_by(7).collect();
            let pmin: Vec<f32> = idx.iter().map(|&j| min[j]).collect();
            let pmax: Vec<f32> = idx.iter().map(|&j| max[j]).collect();
            let qp = fbgemm_qparams(&pmin, &pmax, qmin, qmax, sym);
            assert_bits(&qp.scale, &fx.f32(&format!("{tag}_pt_scale")), &tag);
            assert_eq!(
                qp.zero_point,
                fx.i64(&format!("{tag}_pt_zp")),
                "{tag} pt zp"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}

#[test]
fn the_two_formulas_differ_as_documented() {
    // PyTorch issue #88800: symmetric qint8 scale is amax/127.5 in Python, max(|min|/128,
    // max/127) in fbgemm. The fixture must show it for the checks above to mean anything.
    let fx = Fixture::load("quant_qparams.safetensors");
    let py = fx.f32("obs_qint8_sym_scale");
    let fb = fx.f32("fb_m128_127_sym_scale");
    assert!(py.iter().zip(&fb).any(|(a, b)| a != b));
}

#[test]
fn empty_observer_state_gives_pytorch_default() {
    let spec = ObserverQParamsSpec {
        qscheme: QScheme::PerTensorAffine,
        dtype: QuantDtype::QUInt8,
        quant_min: 0,
        quant_max: 255,
        has_customized_qrange: false,
        eps: f32::EPSILON,
    };
    let qp = observer_qparams(&[f32::INFINITY], &[f32::NEG_INFINITY], &spec).unwrap();
    assert_eq!(qp.scale, vec![1.0]);
    assert_eq!(qp.zero_point, vec![0]);
    assert!(observer_qparams(&[2.0], &[1.0], &spec).is_none());
    assert!(observer_qparams(&[f32::NAN], &[1.0], &spec).is_none());
}

#[test]
fn invalid_custom_ranges_are_rejected() {
    assert!(calculate_qmin_qmax(QuantDtype::QUInt8, Some((1, 255)), false).is_err());
    assert!(calculate_qmin_qmax(QuantDtype::QInt8, Some((0, 0)), false).is_err());
    assert!(calculate_qmin_qmax(QuantDtype::QInt8, Some((-129, 127)), false).is_err());
}
