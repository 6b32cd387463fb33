//! Int8 ops against PyTorch's quantized CPU ops (`int_repr()` equality), both engines:
//! `quantized::conv2d[_relu]`, `quantized::linear[_relu]`, `quantized::add[_relu]`,
//! `adaptive_avg_pool2d` to 1×1. Fixtures: `scripts/gen_int8_fixtures.py`.

use crate::common::{Fixture, u8s};
use burn_qat::Error;
use burn_qat::int8::{
    Conv2dSpec, Engine, Int8Add, Int8Conv2d, Int8Linear, PoolInputLayout, QParamsPt, QTensor,
    QWeight, WeightQParams, adaptive_avg_pool2d_1x1,
};

fn engine(id: i64) -> Engine {
    if id == 0 {
        Engine::Qnnpack
    } else {
        Engine::X86
    }
}

fn qtensor(fx: &Fixture, c: &str, name: &str) -> QTensor {
    let qp = QParamsPt::new(
        fx.scalar(&format!("{c}.{name}_qp")),
        fx.i64(&format!("{c}.{name}_zp"))[0] as i32,
    )
    .unwrap();
    let key = format!("{c}.{name}");
    QTensor::from_raw(u8s(fx, &key), &fx.shape(&key), qp).unwrap()
}

fn out_qparams(fx: &Fixture, c: &str) -> QParamsPt {
    QParamsPt::new(
        fx.scalar(&format!("{c}.y_qp")),
        fx.i64(&format!("{c}.y_zp"))[0] as i32,
    )
    .unwrap()
}

fn weight(fx: &Fixture, c: &str, per_channel: bool) -> QWeight {
    let key = format!("{c}.w");
    let data: Vec<i8> = fx.i64(&key).iter().map(|&v| v as i8).collect();
    let scales = fx.f32(&format!("{c}.w_scales"));
    let zps: Vec<i32> = fx
        .i64(&format!("{c}.w_zps"))
        .iter()
        .map(|&z| z as i32)
        .collect();
    let qparams = if per_channel {
        WeightQParams::PerChannel {
            scales,
            zero_points: zps,
        }
    } else {
        WeightQParams::PerTensor {
            scale: scales[0],
            zero_point: zps[0],
        }
    };
    QWeight::from_raw(data, &fx.shape(&key), qparams).unwrap()
}

/// Counts differing outputs, printing the first few; returns (mismatches, max |diff|).
fn compare(got: &QTensor, fx: &Fixture, c: &str) -> (usize, i64) {
    let key = format!("{c}.y");
    assert_eq!(got.shape(), fx.shape(&key).as_slice(), "{c}: shape");
    let expected = fx.i64(&key);
    let mut bad = 0;
    let mut worst = 0;
    for (i, (&g, &e)) in got.to_contiguous().data().iter().zip(&expected).enumerate() {
        if g as i64 != e {
            if bad < 3 {
                eprintln!("{c}: element {i} is {g}, PyTorch gives {e}");
            }
            bad += 1;
            worst = worst.max((g as i64 - e).abs());
        }
    }
    (bad, worst)
}

/// Counts cases, outputs and outputs that differ from PyTorch over one op's fixture.
#[derive(Default)]
struct Tally {
    cases: usize,
    outputs: usize,
    bad: usize,
}

impl Tally {
    /// Compares case `c`'s output with PyTorch's and counts it.
    fn record(&mut self, got: &QTensor, fx: &Fixture, c: &str) {
        let (bad, worst) = compare(got, fx, c);
        if bad > 0 {
            eprintln!("{c}: {bad} of {} differ (max {worst})", got.data().len());
        }
        self.cases += 1;
        self.outputs += got.data().len();
        self.bad += bad;
    }

    /// Asserts the expected case count and that no output differs.
    fn finish(self, what: &str, expected_cases: usize) {
        let Tally {
            cases,
            outputs,
            bad,
        } = self;
        eprintln!("{what}: {cases} cases, {outputs} outputs, {bad} differ");
        assert_eq!(cases, expected_cases, "{what}: fixture case count");
        assert_eq!(
            bad, 0,
            "{what}: {bad} of {outputs} outputs differ from PyTorch"
        );
    }
}

#[test]
fn conv2d_is_bit_exact() {
    let fx = Fixture::load("int8_conv.safetensors");
    let mut tally = Tally::default();
    for c in fx.case_names() {
        let m = fx.i64(&format!("{c}.meta"));
        let x = qtensor(&fx, &c, "x");
        let spec = Conv2dSpec {
            stride: m[3] as usize,
            padding: m[4] as usize,
            groups: m[5] as usize,
            relu: m[2] == 1,
        };
        let conv = Int8Conv2d::new(
            weight(&fx, &c, m[1] == 1),
            Some(fx.f32(&format!("{c}.bias"))),
            spec,
            x.qparams(),
            out_qparams(&fx, &c),
            engine(m[0]),
        )
        .unwrap();
        let y = conv.forward(&x).unwrap();
        tally.record(&y, &fx, &c);
    }
    tally.finish("conv2d", 64);
}

#[test]
fn linear_is_bit_exact() {
    let fx = Fixture::load("int8_linear.safetensors");
    let mut tally = Tally::default();
    for c in fx.case_names() {
        let m = fx.i64(&format!("{c}.meta"));
        let x = qtensor(&fx, &c, "x");
        let lin = Int8Linear::new(
            weight(&fx, &c, m[1] == 1),
            Some(fx.f32(&format!("{c}.bias"))),
            m[2] == 1,
            x.qparams(),
            out_qparams(&fx, &c),
            engine(m[0]),
        )
        .unwrap();
        let y = lin.forward(&x).unwrap();
        tally.record(&y, &fx, &c);
    }
    tally.finish("linear", 24);
}

#[test]
fn add_is_bit_exact() {
    let fx = Fixture::load("int8_add.safetensors");
    let mut tally = Tally::default();
    for c in fx.case_names() {
        let m = fx.i64(&format!("{c}.meta"));
        let a = qtensor(&fx, &c, "a");
        let b = qtensor(&fx, &c, "b");
        let add = Int8Add::new(out_qparams(&fx, &c), m[1] == 1, engine(m[0]));
        let y = add.forward(&a, &b).unwrap();
        tally.record(&y, &fx, &c);
    }
    tally.finish("add", 16);
}

#[test]
fn adaptive_avg_pool_is_bit_exact() {
    let fx = Fixture::load("int8_pool.safetensors");
    let mut tally = Tally::default();
    for c in fx.case_names() {
        let m = fx.i64(&format!("{c}.meta"));
        let x = qtensor(&fx, &c, "x");
        let layout = if m[1] == 1 {
            PoolInputLayout::ChannelsLast
        } else {
            PoolInputLayout::Contiguous
        };
        let y = adaptive_avg_pool2d_1x1(&x, engine(m[0]), layout).unwrap();
        assert_eq!(
            y.qparams(),
            x.qparams(),
            "{c}: output keeps the input qparams"
        );
        // The same values stored channels-last (a conv's output) are pooled in place.
        let x_cl = x.to_format(burn_qat::int8::MemoryFormat::ChannelsLast);
        let y_cl = adaptive_avg_pool2d_1x1(&x_cl, engine(m[0]), layout).unwrap();
        assert_eq!(y_cl.data(), y.data(), "{c}: the input stored channels-last");
        tally.record(&y, &fx, &c);
    }
    tally.finish("adaptive_avg_pool2d", 20);
}

#[test]
fn bad_shapes_are_errors() {
    let qp = QParamsPt::new(0.1, 10).unwrap();
    let w = QWeight::quantize_per_tensor(&[0.1; 4 * 2 * 3 * 3], &[4, 2, 3, 3], 0.01, 0).unwrap();
    let spec = Conv2dSpec {
        stride: 1,
        padding: 0,
        groups: 1,
        relu: false,
    };
    let conv = Int8Conv2d::new(w.clone(), None, spec, qp, qp, Engine::X86).unwrap();
    let small = QTensor::from_raw(vec![0; 2 * 2 * 2], &[1, 2, 2, 2], qp).unwrap();
    assert!(matches!(conv.forward(&small), Err(Error::Shape(_))));
    let wrong_c = QTensor::from_raw(vec![0; 3 * 9], &[1, 3, 3, 3], qp).unwrap();
    assert!(matches!(conv.forward(&wrong_c), Err(Error::Shape(_))));
    let bias = Some(vec![0.0; 3]);
    assert!(matches!(
        Int8Conv2d::new(w.clone(), bias, spec, qp, qp, Engine::X86),
        Err(Error::Shape(_))
    ));
    let groups = Conv2dSpec { groups: 3, ..spec };
    assert!(matches!(
        Int8Conv2d::new(w, None, groups, qp, qp, Engine::X86),
        Err(Error::Shape(_))
    ));

    let lw = QWeight::quantize_per_tensor(&[0.1; 6], &[2, 3], 0.01, 0).unwrap();
    let lin = Int8Linear::new(lw, None, false, qp, qp, Engine::Qnnpack).unwrap();
    let x = QTensor::from_raw(vec![0; 4], &[1, 4], qp).unwrap();
    assert!(matches!(lin.forward(&x), Err(Error::Shape(_))));

    let add = Int8Add::new(qp, false, Engine::Qnnpack);
    let a = QTensor::from_raw(vec![0; 4], &[1, 4], qp).unwrap();
    let b = QTensor::from_raw(vec![0; 4], &[4, 1], qp).unwrap();
    assert!(matches!(add.forward(&a, &b), Err(Error::Shape(_))));
    // qnnpack rejects scale ratios it cannot represent, as PyTorch does.
    let tiny = QTensor::from_raw(vec![0; 4], &[1, 4], QParamsPt::new(1e-9, 0).unwrap()).unwrap();
    assert!(matches!(add.forward(&tiny, &a), Err(Error::Quant(_))));

    let flat = QTensor::from_raw(vec![0; 4], &[1, 4], qp).unwrap();
    assert!(matches!(
        adaptive_avg_pool2d_1x1(&flat, Engine::X86, PoolInputLayout::ChannelsLast),
        Err(Error::Shape(_))
    ));
}

#[test]
fn conv_with_another_input_scale_recomputes_requantization() {
    let fx = Fixture::load("int8_conv.safetensors");
    let c = "qnnpack_pt_k3";
    let m = fx.i64(&format!("{c}.meta"));
    let x = qtensor(&fx, c, "x");
    let spec = Conv2dSpec {
        stride: m[3] as usize,
        padding: m[4] as usize,
        groups: m[5] as usize,
        relu: false,
    };
    // Prepared for a different input scale: forward must still match PyTorch.
    let conv = Int8Conv2d::new(
        weight(&fx, c, false),
        Some(fx.f32(&format!("{c}.bias"))),
        spec,
        QParamsPt::new(0.5, 0).unwrap(),
        out_qparams(&fx, c),
        Engine::Qnnpack,
    )
    .unwrap();
    let y = conv.forward(&x).unwrap();
    assert_eq!(compare(&y, &fx, c).0, 0);
}
