//! The custom training ops of `burn_qat::ops` against PyTorch (`depthwise_conv.safetensors`,
//! from `scripts/gen_quant_fixtures.py depthwise_conv`), against Burn's generic path, and against
//! finite differences, on every test device (flex, and the GPU backend where there is one).

use crate::common::{Fixture, assert_close, devices, to_vec};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_qat::ops::depthwise_conv2d;

/// Geometry row of the fixture: `[N, C, H, W, KH, KW, sh, sw, top, left, bottom, right]`.
fn options(geo: &[i64]) -> ConvOptions<2> {
    let g: Vec<usize> = geo.iter().map(|&v| v as usize).collect();
    ConvOptions::new_with_padding([g[6], g[7]], [(g[8], g[10]), (g[9], g[11])], [1, 1], g[1])
}

/// `(y, dx, dw)` of `y = depthwise_conv2d(x, w)` for the upstream gradient `dy` (`Σ y·dy`
/// differentiated).
fn run(
    conv: impl Fn(Tensor<4>, Tensor<4>) -> Tensor<4>,
    x: Tensor<4>,
    w: Tensor<4>,
    dy: Tensor<4>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (x, w) = (x.require_grad(), w.require_grad());
    let y = conv(x.clone(), w.clone());
    let grads = (y.clone() * dy).sum().backward();
    let dx = x.grad(&grads).expect("x gradient");
    let dw = w.grad(&grads).expect("w gradient");
    (to_vec(y), to_vec(dx), to_vec(dw))
}

const CASES: [&str; 6] = ["s1", "s2_even", "s2_odd", "k5", "asym", "small"];

#[test]
fn depthwise_conv2d_matches_pytorch_forward_and_gradients() {
    let f = Fixture::load("depthwise_conv.safetensors");
    for device in devices().into_iter().filter(Device::is_autodiff) {
        for case in CASES {
            let opts = options(&f.i64(&format!("{case}.geometry")));
            let t = |k: &str| f.tensor::<4>(&format!("{case}.{k}"), &device);
            let (y, dx, dw) = run(
                |x, w| depthwise_conv2d(x, w, opts.clone()),
                t("x"),
                t("w"),
                t("dout"),
            );
            let what = |k: &str| format!("{case} {k} on {device:?}");
            assert_close(&y, &f.f32(&format!("{case}.out")), 1e-5, 1e-5, &what("out"));
            assert_close(&dx, &f.f32(&format!("{case}.dx")), 1e-5, 1e-5, &what("dx"));
            assert_close(&dw, &f.f32(&format!("{case}.dw")), 1e-4, 1e-5, &what("dw"));
        }
    }
}

/// At MobileNetV2's own sizes (and a permuted, non-contiguous input), the custom op gives what
/// Burn's generic grouped convolution gives.
#[test]
fn depthwise_conv2d_matches_burns_grouped_convolution() {
    for device in devices().into_iter().filter(Device::is_autodiff) {
        for (n, c, side, stride) in [
            (4, 32, 16, 1),
            (2, 96, 16, 2),
            (2, 144, 7, 2),
            (1, 24, 5, 1),
        ] {
            let opts = ConvOptions::new([stride; 2], [1, 1], [1, 1], c);
            let normal = Distribution::Normal(0.0, 1.0);
            // Built NHWC and permuted, so the op sees a strided NCHW view.
            let x = Tensor::<4>::random([n, side, side, c], normal, &device).permute([0, 3, 1, 2]);
            let w = Tensor::<4>::random([c, 1, 3, 3], normal, &device);
            let out = (side + 2 - 3) / stride + 1;
            let dy = Tensor::<4>::random([n, c, out, out], normal, &device);
            let fast = run(
                |x, w| depthwise_conv2d(x, w, opts.clone()),
                x.clone(),
                w.clone(),
                dy.clone(),
            );
            let generic = run(
                |x, w| burn::tensor::module::conv2d(x, w, None, opts.clone()),
                x,
                w,
                dy,
            );
            let what = format!("{n}x{c}x{side} stride {stride} on {device:?}");
            assert_close(&fast.0, &generic.0, 1e-5, 1e-5, &format!("{what}: y"));
            assert_close(&fast.1, &generic.1, 1e-5, 1e-5, &format!("{what}: dx"));
            assert_close(&fast.2, &generic.2, 1e-4, 1e-5, &format!("{what}: dw"));
        }
    }
}

/// The convolution is linear in `x` and in `w`, so a central difference of `Σ y·dy` is exact
/// up to rounding: every gradient entry is checked against it.
#[test]
fn depthwise_conv2d_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let f = Fixture::load("depthwise_conv.safetensors");
    for case in ["s2_odd", "asym"] {
        let opts = options(&f.i64(&format!("{case}.geometry")));
        let t = |k: &str| f.tensor::<4>(&format!("{case}.{k}"), &device);
        let (x, w, dy) = (t("x"), t("w"), t("dout"));
        let (_, dx, dw) = run(
            |x, w| depthwise_conv2d(x, w, opts.clone()),
            x.clone(),
            w.clone(),
            dy.clone(),
        );
        let loss = |x: &Tensor<4>, w: &Tensor<4>| -> f32 {
            let y = depthwise_conv2d(x.clone(), w.clone(), opts.clone());
            (y * dy.clone()).sum().into_scalar()
        };
        for (which, base, analytic) in [("x", &x, &dx), ("w", &w, &dw)] {
            let values = to_vec(base.clone());
            let numeric: Vec<f32> = (0..values.len())
                .map(|i| {
                    let shifted = |delta: f32| {
                        let mut v = values.clone();
                        v[i] += delta;
                        let t = Tensor::<1>::from_data(TensorData::new(v, [values.len()]), &device)
                            .reshape(base.dims());
                        if which == "x" {
                            loss(&t, &w)
                        } else {
                            loss(&x, &t)
                        }
                    };
                    (shifted(0.5) - shifted(-0.5)) / 1.0
                })
                .collect();
            assert_close(analytic, &numeric, 2e-4, 1e-4, &format!("{case} d{which}"));
        }
    }
}

/// Batch norm of `x / d` in training mode (QAT ConvBn's `bn(conv(x, W·s) / s)`), written out
/// in Burn tensor ops: the reference for `BatchNorm2d::forward_divided`.
fn divided_batch_norm_reference(
    x: Tensor<4>,
    d: Tensor<1>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<4> {
    let c = d.dims()[0];
    let per_channel = |v: Tensor<1>| v.reshape([1, c, 1, 1]);
    let xs = x / per_channel(d);
    let channel_mean = |t: Tensor<4>| t.mean_dim(3).mean_dim(2).mean_dim(0);
    let mean = channel_mean(xs.clone());
    let centered = xs - mean;
    let var = channel_mean(centered.clone().square());
    centered / var.add_scalar(eps).sqrt() * per_channel(gamma) + per_channel(beta)
}

/// The fused batch norm with a per-channel divisor (flex; the composition on a GPU device)
/// against the written-out formula: output and the gradients of `x`, `d`, `γ` and `β`. A large
/// ε makes the layer depend on the scale of its input, so that `∂d` is not ≈ 0 (with a small
/// ε, batch norm cancels any per-channel input scale and `∂d` vanishes).
#[test]
fn batch_norm_of_a_divided_input_matches_the_formula_and_its_gradients() {
    use burn_qat::nn::BatchNorm2dConfig;
    for device in devices().into_iter().filter(Device::is_autodiff) {
        let (n, c, side, eps) = (3, 5, 6, 0.5);
        let uniform = |lo, hi| Distribution::Uniform(lo, hi);
        let x = Tensor::<4>::random([n, c, side, side], uniform(-1.0, 1.5), &device);
        let d = Tensor::<1>::random([c], uniform(0.5, 2.0), &device);
        let dy = Tensor::<4>::random([n, c, side, side], uniform(-1.0, 1.0), &device);
        let mut bn = BatchNorm2dConfig::new(c).with_eps(eps).init(&device);
        bn.weight =
            burn::module::Param::from_tensor(Tensor::random([c], uniform(0.5, 1.5), &device));
        bn.bias =
            burn::module::Param::from_tensor(Tensor::random([c], uniform(-0.5, 0.5), &device));
        let grads_of = |y: Tensor<4>, x: &Tensor<4>, d: &Tensor<1>| {
            let grads = (y.clone() * dy.clone()).sum().backward();
            let g1 = |t: &Tensor<1>| to_vec(t.grad(&grads).expect("a gradient"));
            [
                to_vec(y),
                to_vec(x.grad(&grads).expect("dx")),
                g1(d),
                g1(&bn.weight.val()),
                g1(&bn.bias.val()),
            ]
        };
        let (x1, d1) = (x.clone().require_grad(), d.clone().require_grad());
        let fused = grads_of(bn.forward_divided(x1.clone(), d1.clone()), &x1, &d1);
        let (x2, d2) = (x.require_grad(), d.require_grad());
        let (gamma, beta) = (bn.weight.val(), bn.bias.val());
        let reference = divided_batch_norm_reference(x2.clone(), d2.clone(), gamma, beta, eps);
        let reference = grads_of(reference, &x2, &d2);
        let ddivisor = reference[2].iter().map(|v| v.abs()).fold(0.0, f32::max);
        assert!(
            ddivisor > 1e-2,
            "the test needs a non-trivial ∂d, got {ddivisor}"
        );
        for (name, (a, b)) in ["y", "dx", "dd", "dgamma", "dbeta"]
            .iter()
            .zip(fused.iter().zip(&reference))
        {
            assert_close(a, b, 1e-5, 1e-4, &format!("{name} on {device:?}"));
        }
    }
}

/// `FakeQuantize::forward_scaled_rows(w, s)` (QAT ConvBn's weight path in one op) gives what
/// `forward(w · s)` gives: output and `∂w` bit for bit, `∂s` to summation order, the same
/// observed range and qparams, over a schedule of batches (a NaN batch, which the observer
/// skips, among them) with the observer and then the fake-quant switched off, for both qparams
/// formulas, plain and moving-average min/max observers, per-channel and per-tensor schemes.
#[test]
fn scaled_rows_fake_quant_matches_scaling_then_fake_quant() {
    use burn_qat::quant::qparams::QParamsCalculator;
    use burn_qat::quant::{FakeQuantizeConfig, ObserverConfig, ObserverKind, QScheme, QuantDtype};
    let device = Device::flex().autodiff();
    let dims = [6usize, 3, 3, 3];
    let n: usize = dims.iter().product();
    let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let weights = |step: usize| -> Vec<f32> {
        let mut w: Vec<f32> = (0..n)
            .map(|i| (((i * 7919 + step * 131) % 1013) as f32 - 506.0) * 0.0021)
            .collect();
        if step == 2 {
            w[40] = f32::NAN;
        }
        w
    };
    let configs = [
        (
            ObserverKind::MovingAverageMinMax,
            QParamsCalculator::Fbgemm,
            QScheme::PerChannelSymmetric,
            QuantDtype::QInt8,
        ),
        (
            ObserverKind::MovingAverageMinMax,
            QParamsCalculator::Observer,
            QScheme::PerChannelAffine,
            QuantDtype::QUInt8,
        ),
        (
            ObserverKind::MinMax,
            QParamsCalculator::Observer,
            QScheme::PerChannelSymmetric,
            QuantDtype::QInt8,
        ),
        (
            ObserverKind::MovingAverageMinMax,
            QParamsCalculator::Fbgemm,
            QScheme::PerTensorSymmetric,
            QuantDtype::QInt8,
        ),
        (
            ObserverKind::MinMax,
            QParamsCalculator::Observer,
            QScheme::PerTensorAffine,
            QuantDtype::QUInt8,
        ),
    ];
    for (kind, calculator, qscheme, dtype) in configs {
        let observer = ObserverConfig::new(kind)
            .with_qscheme(qscheme)
            .with_dtype(dtype);
        let config = FakeQuantizeConfig::new(observer).with_calculator(calculator);
        let mut fused = config.init(dims[0], &device).unwrap();
        let mut reference = config.init(dims[0], &device).unwrap();
        for step in 0..6 {
            if step == 4 {
                fused.disable_observer();
                reference.disable_observer();
            }
            if step == 5 {
                fused.disable_fake_quant();
                reference.disable_fake_quant();
            }
            let what = format!("{kind:?} {calculator:?} {qscheme:?}, step {step}");
            let w = || {
                Tensor::<4>::from_data(TensorData::new(weights(step), dims), &device).require_grad()
            };
            // A negative and a zero factor among the rows.
            let s_values = vec![0.8f32, -1.3, 0.0, 2.1, 0.45, 1.0];
            let s = || {
                Tensor::<1>::from_data(TensorData::new(s_values.clone(), [6]), &device)
                    .require_grad()
            };
            let (wa, sa, wb, sb) = (w(), s(), w(), s());
            assert_eq!(fused.fuses_scaled_rows(&wa), step < 5, "{what}");
            let ya = fused.forward_scaled_rows(wa.clone(), sa.clone());
            let yb = reference.forward(wb.clone() * sb.clone().reshape([6, 1, 1, 1]));
            let dy = Tensor::<4>::from_data(
                TensorData::new(
                    (0..n)
                        .map(|i| (i % 13) as f32 * 0.5 - 3.0)
                        .collect::<Vec<_>>(),
                    dims,
                ),
                &device,
            );
            assert_eq!(
                bits(to_vec(ya.clone())),
                bits(to_vec(yb.clone())),
                "output, {what}"
            );
            let ga = (ya * dy.clone()).sum().backward();
            let gb = (yb * dy).sum().backward();
            let dw = |w: &Tensor<4>, g| to_vec(w.grad(g).expect("w gradient"));
            assert_eq!(bits(dw(&wa, &ga)), bits(dw(&wb, &gb)), "dw, {what}");
            let ds = |s: &Tensor<1>, g| to_vec(s.grad(g).expect("s gradient"));
            if step != 2 {
                assert_close(
                    &ds(&sa, &ga),
                    &ds(&sb, &gb),
                    1e-5,
                    1e-5,
                    &format!("ds, {what}"),
                );
            }
            assert_eq!(
                fused.activation_post_process.min_max(),
                reference.activation_post_process.min_max(),
                "observed range, {what}"
            );
            assert_eq!(
                fused.current_qparams(),
                reference.current_qparams(),
                "qparams, {what}"
            );
        }
        assert_eq!(
            fused.activation_post_process.skipped_batches(),
            1,
            "the NaN batch is skipped"
        );
    }
}

/// The same for QAT LinearBn's weight: a 2-D `[out, in]` view transposed from Burn's `[in, out]`
/// parameter (not contiguous), per-channel symmetric as the x86 QAT qconfig.
#[test]
fn scaled_rows_fake_quant_takes_a_transposed_linear_weight() {
    use burn_qat::quant::qparams::QParamsCalculator;
    use burn_qat::quant::{FakeQuantizeConfig, ObserverConfig, ObserverKind, QScheme, QuantDtype};
    let device = Device::flex().autodiff();
    let (inputs, outputs) = (7usize, 5usize);
    let values: Vec<f32> = (0..inputs * outputs)
        .map(|i| (((i * 7919) % 211) as f32 - 105.0) * 0.013)
        .collect();
    let observer = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
        .with_qscheme(QScheme::PerChannelSymmetric)
        .with_dtype(QuantDtype::QInt8);
    let config = FakeQuantizeConfig::new(observer).with_calculator(QParamsCalculator::Fbgemm);
    let (fused, reference) = (
        config.init(outputs, &device).unwrap(),
        config.init(outputs, &device).unwrap(),
    );
    let param = || {
        Tensor::<2>::from_data(TensorData::new(values.clone(), [inputs, outputs]), &device)
            .require_grad()
    };
    let s_values = vec![0.7f32, 1.9, -0.4, 1.1, 0.05];
    let s = || Tensor::<1>::from_data(TensorData::new(s_values.clone(), [outputs]), &device);
    let (pa, pb) = (param(), param());
    let wa = pa.clone().transpose();
    assert!(fused.fuses_scaled_rows(&wa));
    let ya = fused.forward_scaled_rows(wa, s());
    let yb = reference.forward(pb.clone().transpose() * s().reshape([outputs as i64, 1]));
    let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(to_vec(ya.clone())), bits(to_vec(yb.clone())), "output");
    let dy = Tensor::<2>::from_data(
        TensorData::new(
            (0..inputs * outputs)
                .map(|i| i as f32 * 0.25 - 4.0)
                .collect::<Vec<_>>(),
            [outputs, inputs],
        ),
        &device,
    );
    let ga = (ya * dy.clone()).sum().backward();
    let gb = (yb * dy).sum().backward();
    let grad = |p: &Tensor<2>, g| bits(to_vec(p.grad(g).expect("weight gradient")));
    assert_eq!(grad(&pa, &ga), grad(&pb, &gb), "weight gradient");
    assert_eq!(
        fused.current_qparams(),
        reference.current_qparams(),
        "qparams"
    );
}
