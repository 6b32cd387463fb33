//! The custom training ops of `burn_qat::ops` against PyTorch (`depthwise_conv.safetensors`,
//! from `scripts/gen_quant_fixtures.py depthwise_conv`), against Burn's generic path, and against
//! finite differences, on every test device (flex, and the GPU backend where there is one).

mod common;

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_qat::ops::depthwise_conv2d;
use common::{Fixture, assert_close, devices, to_vec};

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
