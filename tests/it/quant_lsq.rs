//! LSQ (`_LearnableFakeQuantize`) against PyTorch: forward bit-identical, gradients of x, scale
//! and zero-point within 1e-6 (relative for the summed scale/zero-point gradients). Both forms:
//! the stand-alone `LearnableFakeQuantize` and the `FakeQuantize` with a learnable part that
//! qconfigs attach (`&self` forward; a symmetric zero-point gets no gradient there, see
//! `quant::learnable`).

use crate::common::{Fixture, assert_bits, assert_close, to_vec};
use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::quant::{
    FakeQuantize, LearnableFakeQuantize, LearnableFakeQuantizeConfig, ObserverConfig, ObserverKind,
    QScheme, QuantDtype,
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
    let scale = fx.f32(&format!("{name}_scale_in"));
    let zp = fx.f32(&format!("{name}_zp_in"));
    let mut m = config(name).init(scale.len(), device).unwrap();
    let n = scale.len();
    let grad = device.is_autodiff();
    let leaf = |v: Vec<f32>, device: &Device| {
        let t = Tensor::<1>::from_data(TensorData::new(v, [n]), device);
        if grad { t.require_grad() } else { t }
    };
    m.scale = m.scale.map(|t| leaf(scale.clone(), &t.device()));
    m.zero_point = m.zero_point.map(|t| leaf(zp.clone(), &t.device()));
    m.enable_param_learning();
    m
}

/// The same LSQ as a qconfig attaches it: a `FakeQuantize` with a learnable part holding the
/// fixture's parameters, learning.
fn build_fake_quantize(fx: &Fixture, name: &str, device: &Device) -> FakeQuantize {
    let scale = fx.f32(&format!("{name}_scale_in"));
    let mut fq = config(name)
        .fake_quantize()
        .init(scale.len(), device)
        .unwrap();
    fq.enable_param_learning();
    let l = fq.learnable.as_mut().unwrap();
    l.set_values(scale, fx.f32(&format!("{name}_zp_in")));
    fq
}

fn config(name: &str) -> LearnableFakeQuantizeConfig {
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
    LearnableFakeQuantizeConfig::new(observer)
        .with_quant_min(qmin)
        .with_quant_max(qmax)
        .with_use_grad_scaling(gs)
}

/// The output and the parameters the gradients go to (no zero-point: it gets none).
type Forward<const D: usize> = (Tensor<D>, Tensor<1>, Option<Tensor<1>>);

fn run<const D: usize>(fx: &Fixture, name: &str, device: &Device) {
    let mut m = build(fx, name, device);
    check::<D>(fx, name, device, |x| {
        let y = m.forward(x).unwrap();
        (y, m.scale.val(), Some(m.zero_point.val()))
    });
    let fq = build_fake_quantize(fx, name, device);
    let symmetric = config(name).observer.qscheme.is_symmetric();
    check::<D>(fx, name, device, |x| {
        let y = fq.try_forward(x).unwrap();
        let l = fq.learnable().unwrap();
        (y, l.scale.val(), (!symmetric).then(|| l.zero_point.val()))
    });
}

fn check<const D: usize>(
    fx: &Fixture,
    name: &str,
    device: &Device,
    forward: impl FnOnce(Tensor<D>) -> Forward<D>,
) {
    let x: Tensor<D> = fx.tensor(&format!("{name}_x"), device);
    if !device.is_autodiff() {
        let (y, ..) = forward(x);
        assert_bits(&to_vec(y), &fx.f32(&format!("{name}_out")), name);
        return;
    }
    let x = x.require_grad();
    let (y, scale, zero_point) = forward(x.clone());
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
    for (param, key) in [(Some(scale), "dscale"), (zero_point, "dzp")] {
        let Some(param) = param else { continue };
        let got = to_vec(param.grad(&grads).expect("parameter gradient"));
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
