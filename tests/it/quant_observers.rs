//! Observers and `FakeQuantize` modules against PyTorch over sequences of batches: running
//! min/max (plain, moving-average, per-channel), histogram state and its L2 range search,
//! default-qconfig fake-quant modules (fused and not) with their outputs, gradients, scales and
//! zero-points; on `Device::flex()` and `Device::flex().autodiff()`.

use crate::common::{Fixture, assert_close, assert_matches, devices, to_vec};
use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::quant::{
    FakeQuantize, ObserverConfig, ObserverKind, QConfig, QScheme, QuantBackend, QuantDtype,
};

fn tensor_dyn<const D: usize>(fx: &Fixture, key: &str, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(fx.f32(key), fx.shape(key)), device)
}

/// The observers of `gen_observers()` with their channel counts for a `[2, 3, 4, 5]` input.
fn minmax_observers() -> Vec<(&'static str, ObserverConfig, usize)> {
    use ObserverKind::*;
    vec![
        ("minmax_aff", ObserverConfig::new(MinMax), 1),
        (
            "minmax_sym_qint8",
            ObserverConfig::new(MinMax)
                .with_dtype(QuantDtype::QInt8)
                .with_qscheme(QScheme::PerTensorSymmetric),
            1,
        ),
        ("ma_aff", ObserverConfig::new(MovingAverageMinMax), 1),
        (
            "ma_aff_c05_rr",
            ObserverConfig::new(MovingAverageMinMax)
                .with_averaging_constant(0.5)
                .with_reduce_range(true),
            1,
        ),
        (
            "pc_minmax_ax1",
            ObserverConfig::new(MinMax)
                .with_ch_axis(1)
                .with_dtype(QuantDtype::QInt8)
                .with_qscheme(QScheme::PerChannelSymmetric),
            3,
        ),
        (
            "pc_minmax_ax3_aff",
            ObserverConfig::new(MinMax)
                .with_ch_axis(3)
                .with_qscheme(QScheme::PerChannelAffine),
            5,
        ),
        (
            "pc_ma_ax0",
            ObserverConfig::new(MovingAverageMinMax)
                .with_ch_axis(0)
                .with_dtype(QuantDtype::QInt8)
                .with_qscheme(QScheme::PerChannelSymmetric),
            2,
        ),
        (
            "pc_ma_ax2_aff",
            ObserverConfig::new(MovingAverageMinMax)
                .with_ch_axis(2)
                .with_averaging_constant(0.2)
                .with_qscheme(QScheme::PerChannelAffine),
            4,
        ),
    ]
}

#[test]
fn minmax_observers_match_pytorch() {
    let fx = Fixture::load("quant_observers.safetensors");
    for device in devices() {
        for (name, cfg, channels) in minmax_observers() {
            let obs = cfg.init(channels, &device).unwrap();
            for i in 0..4 {
                let x: Tensor<4> = fx.tensor(&format!("seq_x{i}"), &device);
                obs.forward(x);
                let (mn, mx) = obs.min_max();
                assert_matches(
                    &mn,
                    &fx.f32(&format!("{name}_min{i}")),
                    &device,
                    &format!("{name} min {i}"),
                );
                assert_matches(
                    &mx,
                    &fx.f32(&format!("{name}_max{i}")),
                    &device,
                    &format!("{name} max {i}"),
                );
            }
            let qp = obs.calculate_qparams().unwrap();
            assert_matches(&qp.scale, &fx.f32(&format!("{name}_scale")), &device, name);
            assert_eq!(qp.zero_point, fx.i64(&format!("{name}_zp")), "{name} zp");
        }
    }
}

fn histogram_observers() -> Vec<(&'static str, ObserverConfig)> {
    vec![
        ("hist_aff", ObserverConfig::new(ObserverKind::Histogram)),
        (
            "hist_aff_rr",
            ObserverConfig::new(ObserverKind::Histogram).with_reduce_range(true),
        ),
        (
            "hist_sym_qint8",
            ObserverConfig::new(ObserverKind::Histogram)
                .with_dtype(QuantDtype::QInt8)
                .with_qscheme(QScheme::PerTensorSymmetric),
        ),
    ]
}

fn observe_dyn(obs: &burn_qat::quant::Observer, fx: &Fixture, key: &str, device: &Device) {
    match fx.shape(key).len() {
        1 => obs.observe(&tensor_dyn::<1>(fx, key, device)).unwrap(),
        2 => obs.observe(&tensor_dyn::<2>(fx, key, device)).unwrap(),
        r => panic!("rank {r}"),
    }
}

#[test]
fn histogram_observer_matches_pytorch() {
    let fx = Fixture::load("quant_observers.safetensors");
    for device in devices() {
        for (name, cfg) in histogram_observers() {
            let obs = cfg.init(1, &device).unwrap();
            for i in 0..5 {
                observe_dyn(&obs, &fx, &format!("hist_x{i}"), &device);
                let what = format!("{name} batch {i}");
                let (mn, mx) = obs.min_max();
                assert_matches(&mn, &fx.f32(&format!("{name}_min{i}")), &device, &what);
                assert_matches(&mx, &fx.f32(&format!("{name}_max{i}")), &device, &what);
                let hist = obs.histogram_values().unwrap();
                assert_matches(&hist, &fx.f32(&format!("{name}_hist{i}")), &device, &what);
                let qp = obs.calculate_qparams().unwrap();
                assert_matches(
                    &qp.scale,
                    &fx.f32(&format!("{name}_scale{i}")),
                    &device,
                    &what,
                );
                assert_eq!(qp.zero_point, fx.i64(&format!("{name}_zp{i}")), "{what}");
            }
        }
        let obs = ObserverConfig::new(ObserverKind::Histogram)
            .init(1, &device)
            .unwrap();
        observe_dyn(&obs, &fx, "hist_x1", &device);
        observe_dyn(&obs, &fx, "hist_x2", &device);
        assert_matches(
            &obs.histogram_values().unwrap(),
            &fx.f32("hist_plain_hist"),
            &device,
            "plain",
        );
        let qp = obs.calculate_qparams().unwrap();
        assert_matches(
            &qp.scale,
            &fx.f32("hist_plain_scale"),
            &device,
            "plain scale",
        );
        assert_eq!(qp.zero_point, fx.i64("hist_plain_zp"));
    }
}

/// The fake-quant modules of `gen_observers()` and their channel counts for `[3, 4, 3, 3]`.
fn fake_quants(device: &Device) -> Vec<(&'static str, FakeQuantize)> {
    let x86 = QConfig::default_qat(QuantBackend::X86);
    let qnn = QConfig::default_qat(QuantBackend::Qnnpack);
    let x86_v0 = QConfig::default_qat_v0(QuantBackend::X86);
    let qnn_v0 = QConfig::default_qat_v0(QuantBackend::Qnnpack);
    let mk = |q: &burn_qat::quant::Quantizer, c| q.fake_quantize().init(c, device).unwrap();
    vec![
        ("fused_act_rr", mk(&x86.activation, 1)),
        ("fused_act", mk(&qnn.activation, 1)),
        ("fused_wt_pt", mk(&qnn.weight, 1)),
        ("fused_wt_pc", mk(&x86.weight, 3)),
        ("fq_act_rr", mk(&x86_v0.activation, 1)),
        ("fq_wt_pc", mk(&x86_v0.weight, 3)),
        ("fq_wt_pt", mk(&qnn_v0.weight, 1)),
    ]
}

#[test]
fn fake_quantize_modules_match_pytorch() {
    let fx = Fixture::load("quant_observers.safetensors");
    for device in devices() {
        for (name, mut fq) in fake_quants(&device) {
            for i in 0..6 {
                if i == 3 {
                    fq.disable_observer();
                }
                if i == 4 {
                    fq.enable_observer();
                }
                let what = format!("{name} step {i} on {device:?}");
                let x: Tensor<4> = fx.tensor(&format!("fq_x{i}"), &device);
                let (out, dx) = if device.is_autodiff() {
                    let x = x.require_grad();
                    let y = fq.forward(x.clone());
                    let dy: Tensor<4> = fx.tensor(&format!("fq_dy{i}"), &device);
                    let grads = (y.clone() * dy).sum().backward();
                    (to_vec(y), Some(to_vec(x.grad(&grads).unwrap())))
                } else {
                    (to_vec(fq.forward(x)), None)
                };
                assert_matches(&out, &fx.f32(&format!("{name}_out{i}")), &device, &what);
                if let Some(dx) = dx {
                    assert_close(&dx, &fx.f32(&format!("{name}_dx{i}")), 1e-6, 0.0, &what);
                }
                let qp = fq.current_qparams();
                assert_matches(
                    &qp.scale,
                    &fx.f32(&format!("{name}_scale{i}")),
                    &device,
                    &what,
                );
                assert_eq!(qp.zero_point, fx.i64(&format!("{name}_zp{i}")), "{what}");
                let (mn, mx) = fq.activation_post_process.min_max();
                assert_matches(&mn, &fx.f32(&format!("{name}_min{i}")), &device, &what);
                assert_matches(&mx, &fx.f32(&format!("{name}_max{i}")), &device, &what);
            }
            let qp = fq.calculate_qparams().unwrap();
            assert_matches(
                &qp.scale,
                &fx.f32(&format!("{name}_calc_scale")),
                &device,
                name,
            );
            assert_eq!(qp.zero_point, fx.i64(&format!("{name}_calc_zp")), "{name}");
        }
    }
}
