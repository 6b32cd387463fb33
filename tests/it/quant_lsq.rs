//! LSQ (`_LearnableFakeQuantize`) against PyTorch: forward bit-identical, gradients of x, scale
//! and zero-point within 1e-6 (relative for the summed scale/zero-point gradients).

use crate::common::{Fixture, assert_bits, assert_close, to_vec};
use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::quant::{
    LearnableFakeQuantize, LearnableFakeQuantizeConfig, ObserverConfig, ObserverKind, QScheme,
    QuantDtype,
};

/// (name, qscheme, ch_axis, qmin, qmax, grad scaling), as `gen_lsq()`.
fn cases() -> Vec<(&'static str, QScheme, usize, i64, i64, bool)> {
    vec![
        ("pt_aff", QScheme::PerTensorAffine, 0, 0, 255, false),
        ("pt_aff_gs", QScheme::PerTensorAffine, 0, 0, 255, true),
        ("pt_sym", QScheme::PerTensorSymmetric, 0, -128, 127, false),
        ("pc_aff", QScheme::PerChannelAffine, 1, 0, 255, false),
        (
            "pc_sym_gs",
            QScheme::PerChannelSymmetric,
            0,
            -128,
            127,
            true,
        ),
    ]
}

fn build(fx: &Fixture, name: &str, device: &Device) -> LearnableFakeQuantize {
    let (_, qscheme, axis, qmin, qmax, gs) = cases().into_iter().find(|c| c.0 == name).unwrap();
    let dtype = if qmin < 0 {
        QuantDtype::QInt8
    } else {
        QuantDtype::QUInt8
    };
    let observer = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
        .with_qscheme(qscheme)
        .with_dtype(dtype)
        .with_ch_axis(axis);
    let scale = fx.f32(&format!("{name}_scale_in"));
    let mut m = LearnableFakeQuantizeConfig::new(observer)
        .with_quant_min(qmin)
        .with_quant_max(qmax)
        .with_use_grad_scaling(gs)
        .init(scale.len(), device)
        .unwrap();
    let n = scale.len();
    let grad = device.is_autodiff();
    let leaf = |v: Vec<f32>, device: &Device| {
        let t = Tensor::<1>::from_data(TensorData::new(v, [n]), device);
        if grad { t.require_grad() } else { t }
    };
    m.scale = m.scale.map(|t| leaf(scale.clone(), &t.device()));
    let zp = fx.f32(&format!("{name}_zp_in"));
    m.zero_point = m.zero_point.map(|t| leaf(zp.clone(), &t.device()));
    m.enable_param_learning();
    m
}

fn run<const D: usize>(fx: &Fixture, name: &str, device: &Device) {
    let mut m = build(fx, name, device);
    let x: Tensor<D> = fx.tensor(&format!("{name}_x"), device);
    if !device.is_autodiff() {
        let y = m.forward(x).unwrap();
        assert_bits(&to_vec(y), &fx.f32(&format!("{name}_out")), name);
        return;
    }
    let x = x.require_grad();
    let y = m.forward(x.clone()).unwrap();
    assert_bits(&to_vec(y.clone()), &fx.f32(&format!("{name}_out")), name);
    let dy: Tensor<D> = fx.tensor(&format!("{name}_dy"), device);
    let grads = (y * dy).sum().backward();
    let dx = to_vec(x.grad(&grads).unwrap());
    assert_close(
        &dx,
        &fx.f32(&format!("{name}_dx")),
        1e-6,
        0.0,
        &format!("{name} dx"),
    );
    for (param, key) in [(&m.scale, "dscale"), (&m.zero_point, "dzp")] {
        let got = to_vec(param.val().grad(&grads).expect("parameter gradient"));
        let want = fx.f32(&format!("{name}_{key}"));
        // These gradients are sums over many elements; PyTorch and Burn add in different
        // orders, so allow 1e-6 plus f32 rounding of the summed magnitudes.
        let abs = fx.f32(&format!("{name}_{key}_abs"));
        for i in 0..want.len() {
            let tol = 1e-6 + 4.0 * f32::EPSILON * abs[i];
            assert!(
                (got[i] - want[i]).abs() <= tol,
                "{name} {key}[{i}]: {} vs PyTorch {} (tolerance {tol})",
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn lsq_matches_pytorch() {
    let fx = Fixture::load("quant_lsq.safetensors");
    for device in [Device::flex(), Device::flex().autodiff()] {
        for (name, ..) in cases() {
            match fx.shape(&format!("{name}_x")).len() {
                3 => run::<3>(&fx, name, &device),
                4 => run::<4>(&fx, name, &device),
                r => panic!("rank {r}"),
            }
        }
    }
}
