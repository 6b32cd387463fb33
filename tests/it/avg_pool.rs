//! Average pooling with a window, held to PyTorch 2.5.1 (`scripts/gen_avg_pool_fixtures.py`):
//! the int8 op bit for bit per engine, PyTorch input layout, storage format and byte-kernel set
//! (the portable reference, AVX2 and AVX-512, also against each other on random data), the
//! float forward, the layer in a quantized model, its ONNX nodes, and the errors.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use burn_qat::convert::convert;
use burn_qat::data::SplitMix64;
use burn_qat::export::{OnnxBatch, trace_onnx};
use burn_qat::int8::avg_pool::{AvgPool2dSpec, AvgPoolCall, avg_pool2d_with};
use burn_qat::int8::kernels::bytewise::{ByteKernels, reference_avg_pool};
use burn_qat::int8::{Engine, MemoryFormat, PoolInputLayout, QParamsPt, QTensor};
use burn_qat::nn::{
    AvgPool2d, AvgPool2dConfig, Batch, DeQuantStub, QBatch, QuantLayer, QuantOp, QuantStub,
};
use burn_qat::onnx::ExportKind;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::prepare;

use crate::common::{Fixture, assert_close, byte_kernel_sets, to_vec, u8s};

const ENGINES: [Engine; 2] = [Engine::Qnnpack, Engine::X86];
const LAYOUTS: [PoolInputLayout; 2] = [PoolInputLayout::Contiguous, PoolInputLayout::ChannelsLast];

fn fixture() -> Fixture {
    Fixture::load("avg_pool.safetensors")
}

/// The spec of a case's `meta` `[kh, kw, sh, sw, ph, pw, ceil, count_include_pad, divisor]`.
fn spec(meta: &[i64]) -> AvgPool2dSpec {
    let m: Vec<usize> = meta.iter().map(|&v| v as usize).collect();
    AvgPool2dSpec {
        kernel_size: [m[0], m[1]],
        stride: [m[2], m[3]],
        padding: [m[4], m[5]],
        ceil_mode: m[6] == 1,
        count_include_pad: m[7] == 1,
        divisor_override: (m[8] != 0).then_some(m[8] as i32),
    }
}

fn config(s: &AvgPool2dSpec) -> AvgPool2dConfig {
    AvgPool2dConfig::new(s.kernel_size)
        .with_stride(s.stride)
        .with_padding(s.padding)
        .with_ceil_mode(s.ceil_mode)
        .with_count_include_pad(s.count_include_pad)
        .with_divisor_override(s.divisor_override)
}

fn int8_cases(fx: &Fixture) -> Vec<String> {
    fx.case_names()
        .into_iter()
        .filter(|c| c != "float")
        .collect()
}

/// PyTorch's output of case `c` on `engine` for an input it holds in `layout`: qnnpack's own
/// kernel without `ceil_mode`, else the native kernel of that layout (the fixture stores an
/// output only where it differs from the x86 channels-last one).
fn expected(
    fx: &Fixture,
    c: &str,
    s: &AvgPool2dSpec,
    engine: Engine,
    layout: PoolInputLayout,
) -> Vec<u8> {
    let names = fx.names();
    let own = match (engine, layout) {
        (Engine::Qnnpack, _) if !s.ceil_mode => "y_qnnpack",
        (_, PoolInputLayout::Contiguous) => "y_nchw",
        _ => "y_nhwc",
    };
    let key = format!("{c}.{own}");
    match names.contains(&key) {
        true => u8s(fx, &key),
        false => u8s(fx, &format!("{c}.y_nhwc")),
    }
}

#[test]
fn int8_avg_pool_is_bit_exact_per_engine_layout_and_kernel_set() {
    let fx = fixture();
    let (cases, mut outputs) = (int8_cases(&fx), 0);
    for c in &cases {
        let qparams = QParamsPt::new(
            fx.scalar(&format!("{c}.x_qp")),
            fx.i64(&format!("{c}.x_zp"))[0] as i32,
        )
        .unwrap();
        let s = spec(&fx.i64(&format!("{c}.meta")));
        let x = QTensor::from_raw(
            u8s(&fx, &format!("{c}.x")),
            &fx.shape(&format!("{c}.x")),
            qparams,
        )
        .unwrap();
        for engine in ENGINES {
            for layout in LAYOUTS {
                let want = expected(&fx, c, &s, engine, layout);
                // The storage format changes nothing: PyTorch's layout picks the arithmetic.
                for format in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
                    let x = x.to_format(format);
                    for kernels in byte_kernel_sets() {
                        let y = avg_pool2d_with(kernels, &x, &s, engine, layout).unwrap();
                        assert_eq!(y.qparams(), qparams, "{c}: the input's qparams");
                        let got = y.to_contiguous().data().to_vec();
                        assert_eq!(got, want, "{c} {engine} {layout:?} {format:?} {kernels:?}");
                        outputs += got.len();
                    }
                }
            }
        }
    }
    println!(
        "avg pooling: {} cases, {outputs} outputs bit-exact",
        cases.len()
    );
    assert_eq!(cases.len(), 56);
}

/// The fixture exercises what it is for: qnnpack ignoring `count_include_pad` and the divisor,
/// and NCHW inputs rounding after the zero-point.
#[test]
fn the_fixture_separates_the_three_paths() {
    let fx = fixture();
    let names = fx.names();
    let with = |field: &str| names.iter().filter(|n| n.ends_with(field)).count();
    assert!(with(".y_qnnpack") >= 20, "{}", with(".y_qnnpack"));
    assert!(with(".y_nchw") >= 20, "{}", with(".y_nchw"));
}

/// Every vector byte-kernel set this CPU runs against the reference, on random inputs: channel
/// counts 1 to 150 (vector bodies and tails of 8, 16, 32 and 64), all three arithmetics.
#[test]
fn vector_avg_pool_kernels_match_the_reference() {
    let mut rng = SplitMix64::new(33);
    let mut compared = 0;
    for t in 0..240usize {
        let k = [1 + t % 4, 1 + (t / 4) % 4];
        let s = AvgPool2dSpec {
            kernel_size: k,
            stride: [1 + (t / 3) % 3, 1 + (t / 7) % 2],
            padding: [(t / 13) % (k[0] / 2 + 1), (t / 17) % (k[1] / 2 + 1)],
            ceil_mode: t % 2 == 1,
            count_include_pad: t % 5 != 0,
            divisor_override: [None, None, Some(1), Some(7), Some(-3)][t % 5],
        };
        let shape = [
            1 + t % 2,
            1 + (t * 37) % 150,
            1 + (t * 7) % 9,
            1 + (t * 11) % 10,
        ];
        let zero_point = rng.below(256) as i32;
        let (engine, layout) = (ENGINES[t % 2], LAYOUTS[(t / 2) % 2]);
        let Ok(call) = AvgPoolCall::new(&s, &shape, 0.05, zero_point, engine, layout) else {
            continue;
        };
        let n: usize = shape.iter().product();
        let input: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        let len = shape[0] * shape[1] * call.out_hw[0] * call.out_hw[1];
        let mut want = vec![7; len];
        ByteKernels::Reference.avg_pool2d(&call, &input, &mut want);
        for kernels in byte_kernel_sets() {
            let mut got = vec![9; len];
            kernels.avg_pool2d(&call, &input, &mut got);
            assert_eq!(got, want, "{kernels:?} {s:?} {shape:?} {engine} {layout:?}");
        }
        compared += len;
    }
    // A call large enough to be split over threads, against one unsplit reference pass.
    let s = AvgPool2dSpec {
        kernel_size: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        ceil_mode: false,
        count_include_pad: false,
        divisor_override: None,
    };
    let shape = [3, 72, 30, 31];
    let call = AvgPoolCall::new(
        &s,
        &shape,
        0.05,
        77,
        Engine::X86,
        PoolInputLayout::Contiguous,
    )
    .unwrap();
    let input: Vec<u8> = (0..shape.iter().product())
        .map(|_| rng.below(256) as u8)
        .collect();
    let mut want = vec![0; 3 * 72 * 30 * 31];
    reference_avg_pool(&call, &input, 0, &mut want);
    for kernels in byte_kernel_sets() {
        let mut got = vec![1; want.len()];
        kernels.avg_pool2d(&call, &input, &mut got);
        assert_eq!(got, want, "{kernels:?}, split over threads");
    }
    println!("avg pooling kernels = reference on {compared} outputs");
    assert!(compared > 10_000);
}

#[test]
fn float_forward_matches_pytorch() {
    let fx = fixture();
    let x: Tensor<4> = fx.tensor("float.x", &Device::flex());
    for c in int8_cases(&fx) {
        let s = spec(&fx.i64(&format!("{c}.meta")));
        let pool = config(&s).init().unwrap();
        let key = format!("float.y_{c}");
        let y: Tensor<4> = pool.forward(x.clone());
        assert_eq!(y.dims().to_vec(), fx.shape(&key), "{key}");
        assert_close(&to_vec(y), &fx.f32(&key), 1e-6, 1e-6, &key);
    }
}

#[test]
fn bad_avg_pool_configs_and_inputs_are_errors() {
    let bad = [
        AvgPool2dConfig::new([0, 3]),
        AvgPool2dConfig::new([3, 3]).with_stride([1, 0]),
        AvgPool2dConfig::new([3, 3]).with_padding([2, 1]),
        AvgPool2dConfig::new([2, 2]).with_padding([0, 2]),
        AvgPool2dConfig::new([3, 3]).with_divisor_override(Some(0)),
    ];
    for config in bad {
        assert!(config.init().is_err(), "{config:?}");
    }
    let pool = AvgPool2dConfig::new([3, 3]).init().unwrap();
    let q = QParamsPt::new(0.1, 0).unwrap();
    let small = QTensor::from_raw(vec![0; 4], &[1, 1, 2, 2], q).unwrap();
    let flat = QTensor::from_raw(vec![0; 4], &[1, 4], q).unwrap();
    let huge = AvgPool2dConfig::new([4096, 2048]).init().unwrap();
    let e = huge.forward_int8_in(&[&small], Engine::X86, PoolInputLayout::ChannelsLast);
    assert!(e.unwrap_err().to_string().contains("overflow"));
    for engine in ENGINES {
        for layout in LAYOUTS {
            for x in [&small, &flat] {
                let e = pool.forward_int8_in(&[x], engine, layout).unwrap_err();
                assert!(e.to_string().contains("pool"), "{e}");
            }
        }
    }
}

/// `QuantStub → AvgPool2d → DeQuantStub`.
#[derive(Module, Debug)]
struct Tiny {
    quant: QuantStub,
    pool: AvgPool2d,
    dequant: DeQuantStub,
}

burn_qat::impl_quantizable!(Tiny {
    quant,
    pool,
    dequant
});

impl Tiny {
    fn new(pool: AvgPool2dConfig) -> Self {
        Tiny {
            quant: QuantStub::new(),
            pool: pool.init().unwrap(),
            dequant: DeQuantStub::new(),
        }
    }

    fn forward_as<X: Batch<4>>(&self, x: Tensor<4>) -> X::Float {
        let x: X = self.quant.forward(x);
        self.dequant.forward(self.pool.forward(x))
    }
}

/// The layer in a converted model: no observer, no state, and the int8 batch runs PyTorch's
/// arithmetic for the model's engine on the QuantStub's NCHW output.
#[test]
fn the_layer_runs_in_a_quantized_model_and_exports_to_onnx() {
    let fx = fixture();
    let device = Device::flex();
    let x: Tensor<4> = fx.tensor("float.x", &device);
    let config = AvgPool2dConfig::new([3, 3])
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_count_include_pad(false);
    for (backend, engine) in [
        (QuantBackend::Qnnpack, Engine::Qnnpack),
        (QuantBackend::X86, Engine::X86),
    ] {
        let mut model = Tiny::new(config.clone());
        let float = to_vec(model.forward_as::<Tensor<4>>(x.clone()));
        prepare(&mut model, QConfig::default_ptq(backend), &device).unwrap();
        assert!(
            model.pool.output_observer().is_none(),
            "AvgPool2d is not observed"
        );
        let _ = model.forward_as::<Tensor<4>>(x.clone());
        convert(&mut model, engine).unwrap();
        assert!(model.pool.is_converted() && model.pool.int8_output().is_none());
        let q = model.quant.int8.unwrap().qparams;
        let y = to_vec(model.forward_as::<QBatch<4>>(x.clone()).unwrap());

        let xq = QTensor::quantize(&fx.f32("float.x"), &fx.shape("float.x"), q).unwrap();
        let direct = avg_pool2d_with(
            ByteKernels::Reference,
            &xq,
            &model.pool.spec,
            engine,
            PoolInputLayout::Contiguous,
        )
        .unwrap();
        let want: Vec<f32> = direct
            .to_contiguous()
            .data()
            .iter()
            .map(|&b| (b as i32 - q.zero_point) as f32 * q.scale)
            .collect();
        assert_eq!(y, want, "{engine}");
        let worst = y
            .iter()
            .zip(&float)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // qnnpack divides by 9 at the edges whatever count_include_pad says, as PyTorch's.
        if engine == Engine::X86 {
            assert!(
                worst <= 1.5 * q.scale,
                "{engine}: {worst} vs the float model"
            );
        }

        let int8 = trace_onnx(&model, ExportKind::Int8, "tiny", [1, 3, 6, 7], |m, x| {
            m.forward_as::<OnnxBatch<4>>(x)
        })
        .unwrap();
        let ops: Vec<String> = int8
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter_map(|n| n.op_type.clone())
            .collect();
        let at = ops
            .iter()
            .position(|o| o == "AveragePool")
            .expect("an AveragePool node");
        assert_eq!(ops[at - 1], "DequantizeLinear", "{ops:?}");
        assert_eq!(ops[at + 1], "QuantizeLinear", "{ops:?}");
    }
    let float = Tiny::new(config.clone());
    let onnx = trace_onnx(&float, ExportKind::Float, "tiny", [1, 3, 6, 7], |m, x| {
        m.forward_as::<OnnxBatch<4>>(x)
    })
    .unwrap();
    let graph = onnx.graph.unwrap();
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("AveragePool"))
        .expect("an AveragePool node");
    let attrs: Vec<_> = node
        .attribute
        .iter()
        .map(|a| (a.name.clone(), a.i, a.ints.clone()))
        .collect();
    println!("{attrs:?}");
    let int = |name: &str| attrs.iter().find(|a| a.0.as_deref() == Some(name)).unwrap();
    assert_eq!(int("count_include_pad").1, Some(0));
    assert_eq!(int("pads").2, vec![1, 1, 1, 1]);
    assert_eq!(int("strides").2, vec![2, 2]);
    assert_eq!(int("kernel_shape").2, vec![3, 3]);

    let divided = Tiny::new(config.with_divisor_override(Some(4)));
    let e = trace_onnx(&divided, ExportKind::Float, "tiny", [1, 3, 6, 7], |m, x| {
        m.forward_as::<OnnxBatch<4>>(x)
    })
    .unwrap_err();
    assert!(e.to_string().contains("divisor_override"), "{e}");
}
