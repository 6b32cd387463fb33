//! Non-finite inputs, unobserved observers, record round-trips and the default qconfigs
//! (compared with the settings PyTorch's `get_default_qconfig` / `get_default_qat_qconfig`
//! build, dumped by the fixture generator).

use crate::common::{Fixture, devices};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::Error;
use burn_qat::quant::{
    ObserverConfig, ObserverKind, QConfig, QParamsCalculator, QScheme, QuantBackend, QuantDtype,
    Quantizer,
};

fn t1(v: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

#[test]
fn minmax_observers_reject_nan_and_inf_and_keep_state() {
    for device in devices() {
        for kind in [ObserverKind::MinMax, ObserverKind::MovingAverageMinMax] {
            for qscheme in [QScheme::PerTensorAffine, QScheme::PerChannelAffine] {
                let obs = ObserverConfig::new(kind)
                    .with_qscheme(qscheme)
                    .init(3, &device)
                    .unwrap();
                obs.observe(&t1(vec![-1.0, 2.0, 0.5], &device)).unwrap();
                let before = obs.min_max();
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let err = obs.observe(&t1(vec![0.0, bad, 1.0], &device)).unwrap_err();
                    assert!(matches!(err, Error::Quant(_)), "{err}");
                }
                assert_eq!(obs.min_max(), before);
                let qp = obs.calculate_qparams().unwrap();
                assert!(qp.scale.iter().all(|s| s.is_finite() && *s > 0.0));
            }
        }
    }
}

#[test]
fn model_forward_skips_non_finite_batches_and_keeps_finite_qparams() {
    for device in devices() {
        for backend in [QuantBackend::X86, QuantBackend::Qnnpack] {
            let fq = QConfig::default_qat(backend)
                .activation
                .fake_quantize()
                .init(1, &device)
                .unwrap();
            let _ = fq.forward(Tensor::<2>::from_data([[0.5, -1.0]], &device));
            let before = fq.current_qparams();
            for bad in [f32::NAN, f32::INFINITY] {
                let _ = fq.forward(Tensor::<2>::from_data([[0.5, bad]], &device));
            }
            assert_eq!(fq.activation_post_process.skipped_batches(), 2);
            let after = fq.current_qparams();
            assert_eq!(after, before);
            assert!(after.scale.iter().all(|s| s.is_finite() && *s > 0.0));
        }
    }
}

#[test]
fn fake_quantize_with_nan_input_errors_instead_of_nan_scale() {
    for device in devices() {
        for backend in [QuantBackend::X86, QuantBackend::Qnnpack] {
            for q in [
                QConfig::default_qat(backend),
                QConfig::default_qat_v0(backend),
            ] {
                let fq = q.activation.fake_quantize().init(1, &device).unwrap();
                let x = Tensor::<2>::from_data([[0.5, f32::NAN]], &device);
                assert!(fq.try_forward(x).is_err());
                assert_eq!(fq.current_qparams().scale, vec![1.0]);
            }
        }
    }
}

#[test]
fn histogram_observer_ignores_inf_and_rejects_nan() {
    for device in devices() {
        let obs = ObserverConfig::new(ObserverKind::Histogram)
            .init(1, &device)
            .unwrap();
        assert!(obs.observe(&t1(vec![1.0, f32::NAN], &device)).is_err());
        obs.observe(&t1(
            vec![1.0, f32::INFINITY, -2.0, f32::NEG_INFINITY],
            &device,
        ))
        .unwrap();
        assert_eq!(obs.min_max(), (vec![-2.0], vec![1.0]));
        // Only infinities: nothing recorded.
        let fresh = ObserverConfig::new(ObserverKind::Histogram)
            .init(1, &device)
            .unwrap();
        fresh.observe(&t1(vec![f32::INFINITY], &device)).unwrap();
        assert_eq!(
            fresh.min_max(),
            (vec![f32::INFINITY], vec![f32::NEG_INFINITY])
        );
    }
}

#[test]
fn unobserved_observers_return_pytorch_default() {
    for device in devices() {
        for kind in [
            ObserverKind::MinMax,
            ObserverKind::MovingAverageMinMax,
            ObserverKind::Histogram,
        ] {
            let obs = ObserverConfig::new(kind).init(1, &device).unwrap();
            let qp = obs.calculate_qparams().unwrap();
            assert_eq!((qp.scale, qp.zero_point), (vec![1.0], vec![0]), "{kind:?}");
        }
        let obs = ObserverConfig::new(ObserverKind::MinMax)
            .with_qscheme(QScheme::PerChannelSymmetric)
            .with_dtype(QuantDtype::QInt8)
            .init(4, &device)
            .unwrap();
        let qp = obs.calculate_qparams().unwrap();
        assert_eq!((qp.scale, qp.zero_point), (vec![1.0], vec![0]));
    }
}

#[test]
fn observer_state_survives_a_record_round_trip() {
    let device = Device::flex();
    for (kind, channels) in [
        (ObserverKind::MovingAverageMinMax, 1),
        (ObserverKind::Histogram, 1),
    ] {
        let cfg = ObserverConfig::new(kind);
        let obs = cfg.init(channels, &device).unwrap();
        obs.observe(&t1(vec![-1.5, 0.25, 3.0, 2.0], &device))
            .unwrap();
        let expected = (
            obs.min_max(),
            obs.histogram_values(),
            obs.calculate_qparams().unwrap(),
        );
        let record = obs.into_record();
        let fresh = cfg.init(channels, &device).unwrap().load_record(record);
        let got = (
            fresh.min_max(),
            fresh.histogram_values(),
            fresh.calculate_qparams().unwrap(),
        );
        assert_eq!(got, expected, "{kind:?}");
    }
    // FakeQuantize: scale / zero-point buffers too.
    let q = QConfig::default_qat(QuantBackend::X86);
    let fq = q.weight.fake_quantize().init(2, &device).unwrap();
    fq.forward(Tensor::<2>::from_data([[0.3, -0.7], [1.5, 0.1]], &device));
    let expected = (fq.current_qparams(), fq.activation_post_process.min_max());
    let fresh = q
        .weight
        .fake_quantize()
        .init(2, &device)
        .unwrap()
        .load_record(fq.into_record());
    assert_eq!(
        (
            fresh.current_qparams(),
            fresh.activation_post_process.min_max()
        ),
        expected
    );
}

#[test]
fn invalid_configurations_are_errors() {
    let device = Device::flex();
    let hist_pc =
        ObserverConfig::new(ObserverKind::Histogram).with_qscheme(QScheme::PerChannelAffine);
    assert!(hist_pc.init(3, &device).is_err());
    let sym_rr = ObserverConfig::new(ObserverKind::MinMax)
        .with_qscheme(QScheme::PerTensorSymmetric)
        .with_reduce_range(true);
    assert!(sym_rr.init(1, &device).is_err());
    let pc_zero = ObserverConfig::new(ObserverKind::MinMax).with_qscheme(QScheme::PerChannelAffine);
    assert!(pc_zero.init(0, &device).is_err());
}

/// `[is_fake_quant, is_fused, kind, signed, qmin, qmax, symmetric, per_channel, ch_axis,
/// reduce_range, averaging_constant * 1e6]`, as `describe()` in the generator.
fn describe(q: &Quantizer) -> Vec<i64> {
    let o = q.observer();
    let (qmin, qmax) = o.qmin_qmax().unwrap();
    let fused = match q {
        Quantizer::FakeQuantize(f) => f.calculator == QParamsCalculator::Fbgemm,
        Quantizer::Observer(_) | Quantizer::Learnable(_) => false,
    };
    let kind = match o.kind {
        ObserverKind::MinMax => 0,
        ObserverKind::MovingAverageMinMax => 1,
        ObserverKind::Histogram => 2,
    };
    let ma = if o.kind == ObserverKind::MovingAverageMinMax {
        (o.averaging_constant * 1e6).round() as i64
    } else {
        0
    };
    vec![
        q.is_fake_quantize() as i64,
        fused as i64,
        kind,
        (o.dtype == QuantDtype::QInt8) as i64,
        qmin,
        qmax,
        o.qscheme.is_symmetric() as i64,
        o.qscheme.is_per_channel() as i64,
        if o.qscheme.is_per_channel() {
            o.ch_axis as i64
        } else {
            0
        },
        o.reduce_range as i64,
        ma,
    ]
}

#[test]
fn default_qconfigs_match_pytorch() {
    let fx = Fixture::load("quant_qconfig.safetensors");
    for name in ["x86", "fbgemm", "qnnpack", "onednn"] {
        let backend: QuantBackend = name.parse().unwrap();
        for (tag, qc) in [
            ("qat", QConfig::default_qat(backend)),
            ("qat0", QConfig::default_qat_v0(backend)),
            ("ptq", QConfig::default_ptq(backend)),
        ] {
            assert_eq!(
                describe(&qc.activation),
                fx.i64(&format!("{name}_{tag}_act")),
                "{name} {tag} act"
            );
            assert_eq!(
                describe(&qc.weight),
                fx.i64(&format!("{name}_{tag}_wt")),
                "{name} {tag} wt"
            );
        }
    }
    assert!("tpu".parse::<QuantBackend>().is_err());
}
