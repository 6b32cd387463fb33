//! Every kernel set is held to the portable [`Reference`] kernels bit for bit, over the shape
//! families MobileNetV2 and user models use: dense 3×3 stride 1 and 2, depthwise, 1×1, grouped,
//! odd channel counts, non-square inputs, padding 0/1/2, batch > 1, both engines, fused ReLU,
//! per-tensor and per-channel weights with non-zero weight zero-points.

use burn_qat::data::SplitMix64;
use burn_qat::int8::{
    Auto, Conv2dSpec, Direct, Engine, Int8Conv2d, Int8Kernels, Int8Linear, MemoryFormat, QParamsPt,
    QTensor, QWeight, Reference, WeightQParams,
};

/// Every kernel set this CPU runs, besides the reference.
fn kernel_sets() -> Vec<(&'static str, &'static dyn Int8Kernels)> {
    let mut sets: Vec<(&'static str, &'static dyn Int8Kernels)> =
        vec![("direct", &Direct), ("auto", &Auto)];
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<Option<burn_qat::int8::kernels::Avx2>> =
            std::sync::OnceLock::new();
        match AVX2.get_or_init(burn_qat::int8::kernels::Avx2::detect) {
            Some(k) => sets.push(("avx2", k)),
            None => eprintln!("this CPU has no AVX2: the AVX2 kernels are not tested here"),
        }
        static VNNI: std::sync::OnceLock<Option<burn_qat::int8::kernels::Avx512Vnni>> =
            std::sync::OnceLock::new();
        match VNNI.get_or_init(burn_qat::int8::kernels::Avx512Vnni::detect) {
            Some(k) => sets.push(("avx512vnni", k)),
            None => eprintln!("this CPU has no AVX-512 VNNI: those kernels are not tested here"),
        }
    }
    sets
}

/// Weight quantization of a test case: per-tensor or per-channel, with non-zero zero-points or
/// symmetric (zero-point 0, as PyTorch's qconfigs make them).
fn weight_qparams(per_channel: bool, symmetric: bool, oc: usize) -> WeightQParams {
    if per_channel {
        WeightQParams::PerChannel {
            scales: (0..oc).map(|o| 0.001 + 0.0005 * o as f32).collect(),
            zero_points: (0..oc)
                .map(|o| if symmetric { 0 } else { (o as i32 % 5) - 2 })
                .collect(),
        }
    } else {
        WeightQParams::PerTensor {
            scale: 0.003,
            zero_point: if symmetric { 0 } else { 3 },
        }
    }
}

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
        // 1×1 stride 1 with an odd channel count and a partial last pixel block
        Case {
            n: 2,
            c: 7,
            h: 5,
            w: 8,
            oc: 6,
            k: 1,
            stride: 1,
            padding: 0,
            groups: 1,
        },
        // the stem, large enough for threads: 3×3 stride 2, 3 channels → 32
        Case {
            n: 1,
            c: 3,
            h: 64,
            w: 62,
            oc: 32,
            k: 3,
            stride: 2,
            padding: 1,
            groups: 1,
        },
        // ResNet's stem: 7×7 stride 2 padding 3, 3 channels → 64
        Case {
            n: 1,
            c: 3,
            h: 37,
            w: 30,
            oc: 64,
            k: 7,
            stride: 2,
            padding: 3,
            groups: 1,
        },
        // ResNeXt's grouped 3×3: 32 groups of 4 channels, stride 2; 4 groups of 8, stride 1
        Case {
            n: 1,
            c: 128,
            h: 15,
            w: 14,
            oc: 128,
            k: 3,
            stride: 2,
            padding: 1,
            groups: 32,
        },
        Case {
            n: 2,
            c: 32,
            h: 9,
            w: 11,
            oc: 32,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 4,
        },
        // depthwise 5×5 stride 1 and 2 over several 16-channel groups (a partial last one):
        // MobileNetV3's 5×5 layers on the AVX-512 kernel
        Case {
            n: 2,
            c: 40,
            h: 9,
            w: 21,
            oc: 40,
            k: 5,
            stride: 1,
            padding: 2,
            groups: 40,
        },
        Case {
            n: 1,
            c: 24,
            h: 12,
            w: 19,
            oc: 24,
            k: 5,
            stride: 2,
            padding: 2,
            groups: 24,
        },
        // depthwise 5×5 stride 2 padding 2, and depthwise stride 3 (the portable fallback)
        Case {
            n: 2,
            c: 5,
            h: 19,
            w: 23,
            oc: 5,
            k: 5,
            stride: 2,
            padding: 2,
            groups: 5,
        },
        Case {
            n: 1,
            c: 4,
            h: 11,
            w: 10,
            oc: 4,
            k: 3,
            stride: 3,
            padding: 1,
            groups: 4,
        },
        // dense 3×3 stride 1, rows wider than a pixel block (blocks inside one row and across two)
        Case {
            n: 1,
            c: 4,
            h: 9,
            w: 20,
            oc: 8,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        },
        // depthwise 3×3 on small planes with more channels than one vector holds (the
        // channels-last kernel: 16 channels per vector, a partial last group), stride 1 and 2
        Case {
            n: 2,
            c: 40,
            h: 7,
            w: 9,
            oc: 40,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 40,
        },
        Case {
            n: 1,
            c: 20,
            h: 14,
            w: 17,
            oc: 20,
            k: 3,
            stride: 2,
            padding: 1,
            groups: 20,
        },
        // depthwise 3×3 stride 2 with an odd width and fewer than 8 output columns
        Case {
            n: 2,
            c: 6,
            h: 14,
            w: 13,
            oc: 6,
            k: 3,
            stride: 2,
            padding: 1,
            groups: 6,
        },
        // wide pointwise (many panels, few pixels: the 7×7 tail of MobileNetV2)
        Case {
            n: 1,
            c: 160,
            h: 7,
            w: 7,
            oc: 964,
            k: 1,
            stride: 1,
            padding: 0,
            groups: 1,
        },
        // ResNet's dense convolutions on NHWC (implicit GEMM, no im2col): 3×3 stride 1 at 64
        // channels over two images, 3×3 stride 2 from 64 to 128 on odd sizes, the 1×1 stride-2
        // downsample, a deep 3×3 whose weights outweigh its input (pixel tiles run fastest)
        // with a partial last panel pair, and the 7×7 stem over two images with 20 outputs
        Case {
            n: 2,
            c: 64,
            h: 10,
            w: 9,
            oc: 64,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        },
        Case {
            n: 1,
            c: 64,
            h: 11,
            w: 12,
            oc: 128,
            k: 3,
            stride: 2,
            padding: 1,
            groups: 1,
        },
        Case {
            n: 2,
            c: 64,
            h: 9,
            w: 10,
            oc: 128,
            k: 1,
            stride: 2,
            padding: 0,
            groups: 1,
        },
        Case {
            n: 1,
            c: 256,
            h: 5,
            w: 5,
            oc: 48,
            k: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        },
        Case {
            n: 2,
            c: 3,
            h: 13,
            w: 11,
            oc: 20,
            k: 7,
            stride: 2,
            padding: 3,
            groups: 1,
        },
    ];
    let mut rng = SplitMix64::new(88);
    let mut checked = 0;
    for (i, case) in cases.iter().enumerate() {
        for engine in [Engine::Qnnpack, Engine::X86] {
            // A small output scale saturates outputs both ways; inputs ≤ 127 with symmetric
            // weights (reduce_range models) take the u8 × s8 kernels where there are some, and
            // full-range inputs with symmetric weights the VNNI ones.
            for (per_channel, relu, out_scale, reduced, symmetric) in [
                (false, false, 0.5, false, false),
                (true, true, 0.5, false, false),
                (true, false, 0.5, false, false),
                (false, true, 0.002, false, false),
                (true, true, 0.5, true, true),
                (false, false, 0.002, true, true),
                (true, false, 0.5, false, true),
            ] {
                let mask = if reduced { 127 } else { 255 };
                let input_qp = QParamsPt::new(0.02, (rng.below(256) & mask) as i32).unwrap();
                let input: Vec<u8> = bytes(&mut rng, case.n * case.c * case.h * case.w)
                    .into_iter()
                    .enumerate()
                    // A few large values among reduced ones: blocks switch kernels.
                    .map(|(i, v)| {
                        if reduced && !relu && i % 97 == 5 {
                            255
                        } else {
                            v & mask as u8
                        }
                    })
                    .collect();
                let x =
                    QTensor::from_raw(input, &[case.n, case.c, case.h, case.w], input_qp).unwrap();
                let shape = [case.oc, case.c / case.groups, case.k, case.k];
                let data: Vec<i8> = bytes(&mut rng, shape.iter().product())
                    .into_iter()
                    .map(|b| b as i8)
                    .collect();
                let qparams = weight_qparams(per_channel, symmetric, case.oc);
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
                    QParamsPt::new(out_scale, 100).unwrap(),
                    engine,
                )
                .unwrap();
                let reference = conv.forward_with(&Reference, &x).unwrap();
                let x_nhwc = x.to_format(MemoryFormat::ChannelsLast);
                for (name, k) in kernel_sets() {
                    // Either input memory format; the output in whichever the kernels write.
                    for (layout, x) in [("nchw", &x), ("nhwc", &*x_nhwc)] {
                        let got = conv.forward_with(k, x).unwrap();
                        assert_eq!(got.shape(), reference.shape(), "case {i} {name}");
                        assert_eq!(
                            got.to_contiguous().data(),
                            reference.to_contiguous().data(),
                            "case {i} {name} {layout} {engine:?} per_channel={per_channel} relu={relu}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, cases.len() * 14 * kernel_sets().len());
}

#[test]
fn every_kernel_set_runs_linear_bit_identically_to_reference() {
    let mut rng = SplitMix64::new(7);
    let mut checked = 0;
    // (batch, in, out): odd sizes, a dot-product tail, MobileNetV2's classifier; asymmetric
    // and symmetric weights (the i16 and the i8 weight paths)
    for (n, k, m) in [(1, 5, 3), (3, 37, 10), (2, 1280, 1000), (4, 16, 17)] {
        for (engine, symmetric) in [Engine::Qnnpack, Engine::X86]
            .into_iter()
            .flat_map(|e| [(e, false), (e, true)])
        {
            for (per_channel, relu, out_scale) in [(false, false, 0.5), (true, true, 0.003)] {
                let input_qp = QParamsPt::new(0.03, rng.below(256) as i32).unwrap();
                let x = QTensor::from_raw(bytes(&mut rng, n * k), &[n, k], input_qp).unwrap();
                let data = bytes(&mut rng, m * k)
                    .into_iter()
                    .map(|b| b as i8)
                    .collect();
                let weight =
                    QWeight::from_raw(data, &[m, k], weight_qparams(per_channel, symmetric, m))
                        .unwrap();
                let bias = (0..m).map(|o| o as f32 * 0.02 - 0.1).collect();
                let out = QParamsPt::new(out_scale, 77).unwrap();
                let linear =
                    Int8Linear::new(weight, Some(bias), relu, input_qp, out, engine).unwrap();
                let reference = linear.forward_with(&Reference, &x).unwrap();
                for (name, kernels) in kernel_sets() {
                    let got = linear.forward_with(kernels, &x).unwrap();
                    assert_eq!(
                        got.data(),
                        reference.data(),
                        "linear {n}x{k}x{m} {name} {engine:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * 4 * 2 * kernel_sets().len());
}

#[test]
fn every_kernel_set_adds_bit_identically_to_reference() {
    use burn_qat::int8::Int8Add;
    let mut rng = SplitMix64::new(11);
    let mut checked = 0;
    // Scale triples from far apart to equal; 1003 elements leave a scalar tail of 3, and
    // 300 007 split over the threads in chunks, the last with a scalar tail of 7.
    for (sa, sb, sy) in [
        (0.02, 0.03, 0.04),
        (0.5, 0.001, 0.01),
        (0.1, 0.1, 0.1),
        (0.01, 0.2, 2.0),
    ] {
        for engine in [Engine::Qnnpack, Engine::X86] {
            for relu in [false, true] {
                let qa = QParamsPt::new(sa, rng.below(256) as i32).unwrap();
                let qb = QParamsPt::new(sb, rng.below(256) as i32).unwrap();
                let out = QParamsPt::new(sy, rng.below(256) as i32).unwrap();
                let params = Int8Add::new(out, relu, engine).params(qa, qb).unwrap();
                for len in [1003, 300_007] {
                    let (a, b) = (bytes(&mut rng, len), bytes(&mut rng, len));
                    let mut want = vec![0u8; len];
                    Reference.add(&params, &a, &b, &mut want);
                    for (name, kernels) in kernel_sets() {
                        let mut got = vec![0u8; len];
                        kernels.add(&params, &a, &b, &mut got);
                        assert!(
                            got == want,
                            "add {name} {engine:?} relu={relu} scales {sa} {sb} {sy} len {len}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 4 * 2 * 2 * 2 * kernel_sets().len());
}

/// A ResNet-sized 3×3 layer (151M multiply-adds over 4 images of 32×32) is dealt to the
/// threads in several tasks per thread, each stepping its tiles across image boundaries: on
/// the pass's thread team (`on_thread_pool`) as a model runs it, and outside one (rayon), the
/// kernel sets match the reference.
#[test]
fn dense_layer_in_many_tasks_is_bit_identical_to_reference() {
    use burn_qat::int8::on_thread_pool;
    let mut rng = SplitMix64::new(26);
    let (n, c, h, w, oc) = (4, 64, 32, 32, 64);
    let input_qp = QParamsPt::new(0.02, 9).unwrap();
    let x = QTensor::from_raw(bytes(&mut rng, n * c * h * w), &[n, c, h, w], input_qp).unwrap();
    let data = bytes(&mut rng, oc * c * 9)
        .into_iter()
        .map(|b| b as i8)
        .collect();
    let weight = QWeight::from_raw(data, &[oc, c, 3, 3], weight_qparams(true, true, oc)).unwrap();
    let spec = Conv2dSpec {
        stride: 1,
        padding: 1,
        groups: 1,
        relu: true,
    };
    let out = QParamsPt::new(0.5, 100).unwrap();
    let bias = Some((0..oc).map(|o| o as f32 * 0.01 - 0.3).collect());
    let conv = Int8Conv2d::new(weight, bias, spec, input_qp, out, Engine::X86).unwrap();
    let reference = conv.forward_with(&Reference, &x).unwrap();
    let reference = reference.to_contiguous();
    let x_nhwc = x.to_format(MemoryFormat::ChannelsLast);
    let on_team = on_thread_pool(|| conv.forward_with(&Auto, &x_nhwc).unwrap());
    assert!(
        on_team.to_contiguous().data() == reference.data(),
        "auto on the team"
    );
    for (name, k) in kernel_sets() {
        let got = conv.forward_with(k, &x_nhwc).unwrap();
        assert!(got.to_contiguous().data() == reference.data(), "{name}");
    }
}

/// A depthwise `k×k` convolution over `data.len() / (k·k)` channels with per-channel weight
/// qparams (symmetric or not), a ramp of biases and output qparams (0.7, 128): the extremes
/// tests' layer.
fn depthwise(
    data: Vec<i8>,
    (k, stride, padding): (usize, usize, usize),
    symmetric: bool,
    relu: bool,
    input_qp: QParamsPt,
    engine: Engine,
) -> Int8Conv2d {
    let c = data.len() / (k * k);
    let weight =
        QWeight::from_raw(data, &[c, 1, k, k], weight_qparams(true, symmetric, c)).unwrap();
    let spec = Conv2dSpec {
        stride,
        padding,
        groups: c,
        relu,
    };
    let out = QParamsPt::new(0.7, 128).unwrap();
    let bias = (0..c).map(|o| o as f32 * 0.3 - 5.0).collect();
    Int8Conv2d::new(weight, Some(bias), spec, input_qp, out, engine).unwrap()
}

/// The depthwise 3×3 kernels at the ends of the ranges: inputs all 0, all 255 or random,
/// symmetric weights all −128, all 127 or random (the AVX-512 kernel's i8 path, `vpdpbusd`)
/// and asymmetric ones (its i16 pair path), full and partial 16-channel groups, stride 1 and
/// 2, padding 0 and 1: every kernel set bit for bit with the reference.
#[test]
fn depthwise_3x3_at_the_extremes_is_bit_identical_to_reference() {
    let mut rng = SplitMix64::new(13);
    let mut checked = 0;
    for (c, stride, padding) in [(16, 1, 1), (40, 2, 1), (144, 1, 0), (24, 2, 0)] {
        for input_kind in 0..3 {
            for weight_kind in 0..4 {
                let (n, h, w) = (2, 9, 11);
                let input: Vec<u8> = match input_kind {
                    0 => vec![0; n * c * h * w],
                    1 => vec![255; n * c * h * w],
                    _ => bytes(&mut rng, n * c * h * w),
                };
                let data: Vec<i8> = match weight_kind {
                    0 => vec![-128; c * 9],
                    1 => vec![127; c * 9],
                    _ => bytes(&mut rng, c * 9)
                        .into_iter()
                        .map(|b| b as i8)
                        .collect(),
                };
                let symmetric = weight_kind != 3;
                let input_qp = QParamsPt::new(0.02, 1 + rng.below(254) as i32).unwrap();
                let x = QTensor::from_raw(input, &[n, c, h, w], input_qp).unwrap();
                let geometry = (3, stride, padding);
                let conv = depthwise(
                    data,
                    geometry,
                    symmetric,
                    input_kind == 2,
                    input_qp,
                    Engine::X86,
                );
                let reference = conv.forward_with(&Reference, &x).unwrap();
                let x_nhwc = x.to_format(MemoryFormat::ChannelsLast);
                for (name, k) in kernel_sets() {
                    let got = conv.forward_with(k, &x_nhwc).unwrap();
                    assert_eq!(
                        got.to_contiguous().data(),
                        reference.to_contiguous().data(),
                        "{name} c={c} stride={stride} pad={padding} input {input_kind} \
                         weights {weight_kind}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * 3 * 4 * kernel_sets().len());
}

/// The channels-last pointwise (1×1 stride 1) kernels: input channels a multiple of 4 but not
/// of 8 or 16, output channels around the 8- and 16-channel panels, pixel counts with tails
/// and a batch; inputs all ≤ 127 (the u8 × s8 path), with one large byte in some pixels (those
/// tiles take the i16 path), all 255 or all 0; weights all −128, all 127 or random; per-tensor
/// and per-channel, both engines; on one thread and on a team.
#[test]
fn pointwise_channels_last_is_bit_identical_to_reference() {
    use burn_qat::int8::on_thread_pool;
    let mut rng = SplitMix64::new(41);
    let mut checked = 0;
    for (n, c, h, w, oc) in [
        (1, 4, 1, 1, 1),
        (2, 12, 3, 5, 7),
        (1, 20, 7, 7, 9),
        (2, 36, 5, 3, 24),
        (1, 8, 6, 6, 33),
        (3, 96, 11, 13, 40),
    ] {
        for input_kind in 0..4 {
            for weight_kind in 0..3 {
                let len = n * c * h * w;
                let input: Vec<u8> = match input_kind {
                    0 => bytes(&mut rng, len).into_iter().map(|v| v & 127).collect(),
                    1 => bytes(&mut rng, len)
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| if i % 211 == 17 { 128 | v } else { v & 127 })
                        .collect(),
                    2 => vec![255; len],
                    _ => vec![0; len],
                };
                let data: Vec<i8> = match weight_kind {
                    0 => vec![-128; oc * c],
                    1 => vec![127; oc * c],
                    _ => bytes(&mut rng, oc * c)
                        .into_iter()
                        .map(|b| b as i8)
                        .collect(),
                };
                let per_channel = weight_kind == 2;
                let engine = if input_kind % 2 == 0 {
                    Engine::X86
                } else {
                    Engine::Qnnpack
                };
                let input_qp = QParamsPt::new(0.02, rng.below(128) as i32).unwrap();
                let x = QTensor::from_raw(input, &[n, c, h, w], input_qp).unwrap();
                let qparams = weight_qparams(per_channel, true, oc);
                let weight = QWeight::from_raw(data, &[oc, c, 1, 1], qparams).unwrap();
                let spec = Conv2dSpec {
                    stride: 1,
                    padding: 0,
                    groups: 1,
                    relu: weight_kind == 1,
                };
                let out = QParamsPt::new(0.3, 120).unwrap();
                let bias = (0..oc).map(|o| o as f32 * 0.2 - 3.0).collect();
                let conv =
                    Int8Conv2d::new(weight, Some(bias), spec, input_qp, out, engine).unwrap();
                let reference = conv.forward_with(&Reference, &x).unwrap();
                let reference = reference.to_contiguous();
                let x_nhwc = x.to_format(MemoryFormat::ChannelsLast);
                let what =
                    format!("n={n} c={c} {h}×{w} oc={oc} input {input_kind} weights {weight_kind}");
                let on_team = on_thread_pool(|| conv.forward_with(&Auto, &x_nhwc).unwrap());
                assert_eq!(
                    on_team.to_contiguous().data(),
                    reference.data(),
                    "auto on the team {what}"
                );
                for (name, k) in kernel_sets() {
                    for (layout, x) in [("nchw", &x), ("nhwc", &*x_nhwc)] {
                        let got = conv.forward_with(k, x).unwrap();
                        let got = got.to_contiguous();
                        assert_eq!(got.data(), reference.data(), "{name} {layout} {what}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6 * 4 * 3 * kernel_sets().len());
}

/// The channels-last depthwise kernels (AVX2: 8 channels per vector; AVX-512: 16) at the
/// ends of the ranges: 3×3 and 5×5, stride 1 and 2, padding 0, 1 and 2, channel counts that
/// are and are not multiples of 8 or 16, rows of more and fewer output pixels than a block,
/// inputs all 0, all 255 or random, weights all −128, all 127, random symmetric or
/// asymmetric (|q − z| up to 130), both engines, inputs arriving NCHW and NHWC.
#[test]
fn depthwise_channels_last_at_the_extremes_is_bit_identical_to_reference() {
    let mut rng = SplitMix64::new(29);
    let mut checked = 0;
    let cases = [
        // (c, k, stride, padding, h, w)
        (13, 3, 1, 0, 5, 11),
        (21, 3, 2, 1, 7, 21),
        (8, 3, 2, 0, 6, 9),
        (36, 3, 1, 1, 4, 19),
        (19, 5, 1, 1, 7, 12),
        (24, 5, 2, 0, 9, 23),
        (43, 5, 2, 2, 6, 8),
        (72, 5, 1, 2, 5, 10),
    ];
    for (c, k, stride, padding, h, w) in cases {
        for input_kind in 0..3 {
            for weight_kind in 0..4 {
                let n = 2;
                let input: Vec<u8> = match input_kind {
                    0 => vec![0; n * c * h * w],
                    1 => vec![255; n * c * h * w],
                    _ => bytes(&mut rng, n * c * h * w),
                };
                let data: Vec<i8> = match weight_kind {
                    0 => vec![-128; c * k * k],
                    1 => vec![127; c * k * k],
                    _ => bytes(&mut rng, c * k * k)
                        .into_iter()
                        .map(|b| b as i8)
                        .collect(),
                };
                let symmetric = weight_kind != 3;
                let engine = [Engine::X86, Engine::Qnnpack][weight_kind % 2];
                let input_qp = QParamsPt::new(0.02, rng.below(256) as i32).unwrap();
                let x = QTensor::from_raw(input, &[n, c, h, w], input_qp).unwrap();
                let geometry = (k, stride, padding);
                let conv = depthwise(data, geometry, symmetric, input_kind == 2, input_qp, engine);
                let reference = conv.forward_with(&Reference, &x).unwrap();
                let x_nhwc = x.to_format(MemoryFormat::ChannelsLast);
                for (name, kernels) in kernel_sets() {
                    for (layout, x) in [("nchw", &x), ("nhwc", &*x_nhwc)] {
                        let got = conv.forward_with(kernels, x).unwrap();
                        assert_eq!(
                            got.to_contiguous().data(),
                            reference.to_contiguous().data(),
                            "{name} {layout} c={c} k={k} stride={stride} pad={padding} \
                             input {input_kind} weights {weight_kind}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, cases.len() * 3 * 4 * kernel_sets().len());
}
