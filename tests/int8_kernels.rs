//! Every kernel set is held to the portable [`Reference`] kernels bit for bit, over the shape
//! families MobileNetV2 and user models use: dense 3×3 stride 1 and 2, depthwise, 1×1, grouped,
//! odd channel counts, non-square inputs, padding 0/1/2, batch > 1, both engines, fused ReLU,
//! per-tensor and per-channel weights with non-zero weight zero-points.

use burn_qat::data::SplitMix64;
use burn_qat::int8::{
    Conv2dSpec, Direct, Engine, Int8Conv2d, Int8Kernels, QParamsPt, QTensor, QWeight, Reference,
    WeightQParams,
};

struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
}

fn bytes(rng: &mut SplitMix64, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

#[test]
fn direct_conv_is_bit_identical_to_reference() {
    let cases = [
        // stem: dense 3×3 stride 2, 3 input channels, non-square
        Case {
            n: 2,
            c: 3,
            h: 17,
            w: 12,
            oc: 8,
            k: 3,
            stride: 2,
            padding: 1,
            groups: 1,
        },
        // dense 3×3 stride 1
        Case {
            n: 1,
            c: 5,
            h: 9,
            w: 11,
            oc: 7,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        },
        // depthwise 3×3 stride 1 and 2, odd channel counts
        Case {
            n: 3,
            c: 13,
            h: 10,
            w: 7,
            oc: 13,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 13,
        },
        Case {
            n: 1,
            c: 9,
            h: 15,
            w: 16,
            oc: 9,
            k: 3,
            stride: 2,
            padding: 1,
            groups: 9,
        },
        // pointwise 1×1
        Case {
            n: 2,
            c: 24,
            h: 6,
            w: 5,
            oc: 11,
            k: 1,
            stride: 1,
            padding: 0,
            groups: 1,
        },
        Case {
            n: 1,
            c: 7,
            h: 8,
            w: 8,
            oc: 5,
            k: 1,
            stride: 2,
            padding: 0,
            groups: 1,
        },
        // grouped, 5×5, padding 2, channel multiplier 2
        Case {
            n: 1,
            c: 6,
            h: 9,
            w: 9,
            oc: 12,
            k: 5,
            stride: 1,
            padding: 2,
            groups: 3,
        },
        // valid convolution, 1×1 output
        Case {
            n: 2,
            c: 4,
            h: 3,
            w: 3,
            oc: 3,
            k: 3,
            stride: 1,
            padding: 0,
            groups: 1,
        },
        // large enough to run on several threads (≥ 256k multiply-adds)
        Case {
            n: 2,
            c: 64,
            h: 20,
            w: 18,
            oc: 48,
            k: 1,
            stride: 1,
            padding: 0,
            groups: 1,
        },
        Case {
            n: 1,
            c: 72,
            h: 30,
            w: 26,
            oc: 72,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 72,
        },
    ];
    let mut rng = SplitMix64::new(88);
    let mut checked = 0;
    for (i, case) in cases.iter().enumerate() {
        for engine in [Engine::Qnnpack, Engine::X86] {
            for (per_channel, relu) in [(false, false), (true, true), (true, false)] {
                let input_qp = QParamsPt::new(0.02, rng.below(256) as i32).unwrap();
                let x = QTensor::from_raw(
                    bytes(&mut rng, case.n * case.c * case.h * case.w),
                    &[case.n, case.c, case.h, case.w],
                    input_qp,
                )
                .unwrap();
                let shape = [case.oc, case.c / case.groups, case.k, case.k];
                let data: Vec<i8> = bytes(&mut rng, shape.iter().product())
                    .into_iter()
                    .map(|b| b as i8)
                    .collect();
                let qparams = if per_channel {
                    WeightQParams::PerChannel {
                        scales: (0..case.oc).map(|o| 0.001 + 0.0005 * o as f32).collect(),
                        zero_points: (0..case.oc).map(|o| (o as i32 % 5) - 2).collect(),
                    }
                } else {
                    WeightQParams::PerTensor {
                        scale: 0.003,
                        zero_point: 3,
                    }
                };
                let weight = QWeight::from_raw(data, &shape, qparams).unwrap();
                let bias: Vec<f32> = (0..case.oc).map(|o| o as f32 * 0.01 - 0.03).collect();
                let spec = Conv2dSpec {
                    stride: case.stride,
                    padding: case.padding,
                    groups: case.groups,
                    relu,
                };
                let conv = Int8Conv2d::new(
                    weight,
                    Some(bias),
                    spec,
                    input_qp,
                    QParamsPt::new(0.5, 100).unwrap(),
                    engine,
                )
                .unwrap();
                let reference = conv.forward_with(&Reference, &x).unwrap();
                let kernels: [(&str, &dyn Int8Kernels); 1] = [("direct", &Direct)];
                for (name, k) in kernels {
                    let got = conv.forward_with(k, &x).unwrap();
                    assert_eq!(got.shape(), reference.shape(), "case {i} {name}");
                    assert_eq!(
                        got.data(),
                        reference.data(),
                        "case {i} {name} {engine:?} per_channel={per_channel} relu={relu}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, cases.len() * 6);
}
