//! Max pooling and hardswish, held to PyTorch 2.5.1 (`scripts/gen_pool_hardswish_fixtures.py`):
//! the int8 kernels bit for bit per engine and per kernel set (the portable reference and AVX2,
//! also against each other on random data and on all 256 input bytes), the float forwards, and
//! a tiny model `QuantStub → Conv → Hardswish → MaxPool → DeQuantStub` through prepare,
//! calibration, convert, the int8 forward and the int8 state dict.

mod tiny;

use burn::tensor::{Device, Tensor};
use burn_qat::convert::convert;
use burn_qat::data::SplitMix64;
use burn_qat::int8::hardswish::{HardswishTables, Int8Hardswish};
use burn_qat::int8::kernels::bytewise::{ByteKernels, MaxPoolCall};
use burn_qat::int8::pool::{MaxPool2dSpec, max_pool2d_with};
use burn_qat::int8::{Engine, MemoryFormat, PoolInputLayout, QParamsPt, QTensor};
use burn_qat::io::{int8_state_dict, load_int8_state_dict};
use burn_qat::nn::{Hardswish, MaxPool2dConfig, QBatch, QuantLayer, Quantizable};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::prepare;

use crate::common::{Fixture, assert_close, byte_kernel_sets, to_vec, u8s};
use tiny::Tiny;

const ENGINES: [Engine; 2] = [Engine::Qnnpack, Engine::X86];

fn fixture() -> Fixture {
    Fixture::load("pool_hardswish.safetensors")
}

/// The NCHW fixture tensor `key`, stored in `format`.
fn qtensor(fx: &Fixture, key: &str, qparams: QParamsPt, format: MemoryFormat) -> QTensor {
    let x = QTensor::from_raw(u8s(fx, key), &fx.shape(key), qparams).unwrap();
    x.to_format(format).into_owned()
}

fn nchw(y: &QTensor) -> Vec<u8> {
    y.to_contiguous().data().to_vec()
}

fn spec(meta: &[i64]) -> MaxPool2dSpec {
    let m: Vec<usize> = meta.iter().map(|&v| v as usize).collect();
    MaxPool2dSpec {
        kernel_size: [m[0], m[1]],
        stride: [m[2], m[3]],
        padding: [m[4], m[5]],
        dilation: [m[6], m[7]],
        ceil_mode: m[8] == 1,
    }
}

#[test]
fn int8_max_pool_is_bit_exact_per_engine_and_kernel_set() {
    let fx = fixture();
    let names = fx.names();
    let (mut cases, mut outputs) = (0, 0);
    for c in fx.case_names().iter().filter(|c| c.starts_with("mp_")) {
        let Some((input, _)) = c[3..].split_once('_') else {
            continue; // an input, not a case
        };
        let input = format!("mp_{input}");
        let qparams = QParamsPt::new(
            fx.scalar(&format!("{input}.x_qp")),
            fx.i64(&format!("{input}.x_zp"))[0] as i32,
        )
        .unwrap();
        let spec = spec(&fx.i64(&format!("{c}.meta")));
        for engine in ENGINES {
            let own = format!("{c}.y_{engine}");
            let key = match names.contains(&own) {
                true => own,
                false => format!("{c}.y"),
            };
            let expected = u8s(&fx, &key);
            for format in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
                let x = qtensor(&fx, &format!("{input}.x"), qparams, format);
                for kernels in byte_kernel_sets() {
                    let y = max_pool2d_with(kernels, &x, &spec, engine).unwrap();
                    assert_eq!(y.qparams(), qparams, "{c}: output keeps the input qparams");
                    assert_eq!(y.shape()[..2], x.shape()[..2]);
                    assert_eq!(nchw(&y), expected, "{c} {engine} {format:?} {kernels:?}");
                    outputs += expected.len();
                }
            }
        }
        cases += 1;
    }
    println!("max pooling: {cases} cases, {outputs} outputs bit-exact");
    assert_eq!(cases, 21);
}

#[test]
fn hardswish_tables_are_pytorchs_for_all_256_inputs() {
    let fx = fixture();
    let mut differing = 0;
    let hs = fx.case_names().into_iter().filter(|c| c.starts_with("hs_"));
    let cases: Vec<String> = hs.collect();
    for c in &cases {
        let (qp, zp) = (fx.f32(&format!("{c}.qp")), fx.i64(&format!("{c}.zp")));
        let input = QParamsPt::new(qp[0], zp[0] as i32).unwrap();
        let output = QParamsPt::new(qp[1], zp[1] as i32).unwrap();
        let qnnpack = HardswishTables::new(input, output, Engine::Qnnpack);
        assert_eq!(
            qnnpack.body.to_vec(),
            u8s(&fx, &format!("{c}.qnnpack_table")),
            "{c}"
        );
        assert_eq!(qnnpack.tail, qnnpack.body, "{c}: qnnpack has one table");
        let x86 = HardswishTables::new(input, output, Engine::X86);
        assert_eq!(
            x86.body.to_vec(),
            u8s(&fx, &format!("{c}.x86_vector_table")),
            "{c}"
        );
        assert_eq!(
            x86.tail.to_vec(),
            u8s(&fx, &format!("{c}.x86_tail_table")),
            "{c}"
        );
        differing += x86
            .body
            .iter()
            .zip(&x86.tail)
            .filter(|(a, b)| a != b)
            .count();
    }
    assert_eq!(cases.len(), 6);
    // hs_diff's x86 body (fma dequantize) and tail differ on four inputs.
    assert_eq!(differing, 4);
}

#[test]
fn int8_hardswish_is_bit_exact_per_engine_layout_and_kernel_set() {
    let fx = fixture();
    let names = fx.names();
    let mut outputs = 0;
    for c in fx.case_names().iter().filter(|c| c.starts_with("hs_")) {
        if !names.contains(&format!("{c}.x")) {
            continue;
        }
        let (qp, zp) = (fx.f32(&format!("{c}.qp")), fx.i64(&format!("{c}.zp")));
        let input = QParamsPt::new(qp[0], zp[0] as i32).unwrap();
        let output = QParamsPt::new(qp[1], zp[1] as i32).unwrap();
        for engine in ENGINES {
            let op = Int8Hardswish::new(output, engine);
            for (layout, suffix) in [
                (PoolInputLayout::Contiguous, "nchw"),
                (PoolInputLayout::ChannelsLast, "nhwc"),
            ] {
                let key = match engine {
                    Engine::Qnnpack => format!("{c}.y_qnnpack"),
                    Engine::X86 => format!("{c}.y_x86_{suffix}"),
                };
                let expected = u8s(&fx, &key);
                // Whatever the storage, the tail follows PyTorch's memory order.
                for format in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
                    let x = qtensor(&fx, &format!("{c}.x"), input, format);
                    for kernels in byte_kernel_sets() {
                        let y = op.forward_with(kernels, &x, layout).unwrap();
                        assert_eq!(y.qparams(), output);
                        assert_eq!(y.format(), format, "elementwise: the storage is kept");
                        assert_eq!(nchw(&y), expected, "{key} {format:?} {kernels:?}");
                        outputs += expected.len();
                    }
                }
            }
        }
    }
    println!("hardswish: {outputs} outputs bit-exact");
    assert!(outputs > 0);
}

/// Every vector byte-kernel set this CPU runs (AVX2, AVX-512) against the reference.
#[test]
fn vector_byte_kernels_match_the_reference() {
    for kernels in byte_kernel_sets() {
        if kernels != ByteKernels::Reference {
            byte_kernels_match_the_reference(kernels);
        }
    }
}

fn byte_kernels_match_the_reference(vector: ByteKernels) {
    let mut rng = SplitMix64::new(25);
    let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.below(256) as u8).collect() };
    // Lookup: every byte value, and lengths around the vector width.
    let (mut lookups, mut pooled) = (0, 0);
    for t in 0..20 {
        let table: [u8; 256] = bytes(256).try_into().unwrap();
        let all: Vec<u8> = (0..=255).collect();
        for input in [all, bytes(t * 37 % 200), bytes(1000 + t)] {
            let (mut a, mut b) = (vec![0; input.len()], vec![0; input.len()]);
            ByteKernels::Reference.lookup(&table, &input, &mut a);
            vector.lookup(&table, &input, &mut b);
            assert_eq!(a, b);
            let direct: Vec<u8> = input.iter().map(|&q| table[q as usize]).collect();
            assert_eq!(a, direct);
            lookups += a.len();
        }
    }
    // Max pooling: windows 1–4, strides 1–3, dilation 1–2, rows of 1–150 (vector paths from
    // 32 or 64 outputs), both edge rules.
    for t in 0..300u64 {
        let k = [1 + t as usize % 4, 1 + (t as usize / 4) % 4];
        let stride = [1 + (t as usize / 3) % 3, 1 + (t as usize / 7) % 3];
        let dilation = [1 + (t as usize / 5) % 2, 1 + (t as usize / 11) % 2];
        let padding = [
            (t as usize / 13) % (k[0] / 2 + 1),
            (t as usize / 17) % (k[1] / 2 + 1),
        ];
        let spec = MaxPool2dSpec {
            kernel_size: k,
            stride,
            padding,
            dilation,
            ceil_mode: t % 2 == 1,
        };
        let h = 1 + (t as usize * 7) % 12;
        let w = 1 + (t as usize * 31) % 150;
        let Ok(oh) = spec.output_size(0, h) else {
            continue;
        };
        let Ok(ow) = spec.output_size(1, w) else {
            continue;
        };
        for clamp in [false, true] {
            let call = MaxPoolCall {
                planes: 3,
                hw: [h, w],
                out_hw: [oh, ow],
                window: spec,
                clamp,
            };
            let input = bytes(3 * h * w);
            let (mut a, mut b) = (vec![7; 3 * oh * ow], vec![9; 3 * oh * ow]);
            ByteKernels::Reference.max_pool2d(&call, &input, &mut a);
            vector.max_pool2d(&call, &input, &mut b);
            assert_eq!(a, b, "{call:?}");
            pooled += a.len();
        }
    }
    println!("{vector:?} = reference: {lookups} lookups, {pooled} pooled outputs");
}

#[test]
fn float_forwards_match_pytorch() {
    let fx = fixture();
    let device = Device::flex();
    let x: Tensor<1> = fx.tensor("float_hs.x", &device);
    let y: Tensor<1> = Hardswish::new().forward(x);
    assert_close(&to_vec(y), &fx.f32("float_hs.y"), 0.0, 0.0, "hardswish");
    let x: Tensor<4> = fx.tensor("float_mp.x", &device);
    for c in fx.case_names().iter().filter(|c| c.starts_with("mp_zp0_")) {
        let s = spec(&fx.i64(&format!("{c}.meta")));
        let pool = MaxPool2dConfig::new(s.kernel_size)
            .with_stride(s.stride)
            .with_padding(s.padding)
            .with_dilation(s.dilation)
            .with_ceil_mode(s.ceil_mode)
            .init()
            .unwrap();
        let key = format!("float_mp.y_{}", &c["mp_zp0_".len()..]);
        let y: Tensor<4> = pool.forward(x.clone());
        assert_eq!(y.dims().to_vec(), fx.shape(&key), "{key}");
        assert_close(&to_vec(y), &fx.f32(&key), 0.0, 0.0, &key);
    }
}

#[test]
fn bad_max_pool_configs_are_errors() {
    assert!(
        MaxPool2dConfig::new([3, 3])
            .with_padding([2, 1])
            .init()
            .is_err()
    );
    assert!(MaxPool2dConfig::new([0, 3]).init().is_err());
    let pool = MaxPool2dConfig::new([3, 3]).init().unwrap();
    let small = QTensor::from_raw(vec![0; 4], &[1, 1, 2, 2], QParamsPt::new(0.1, 0).unwrap());
    assert!(
        max_pool2d_with(
            ByteKernels::Reference,
            &small.unwrap(),
            &pool.spec,
            Engine::X86
        )
        .is_err()
    );
}

/// The int8 output's `int_repr()` from its dequantized values.
fn int_repr(y: &[f32], q: QParamsPt) -> Vec<u8> {
    y.iter()
        .map(|v| (v / q.scale).round() as i32 + q.zero_point)
        .map(|v| v as u8)
        .collect()
}

fn tiny_model_matches_pytorch(backend: QuantBackend, engine: Engine) {
    let fx = fixture();
    let device = Device::flex();
    let mut model = Tiny::new(&fx, &device);
    let x: Tensor<4> = fx.tensor("model.x", &device);
    let float = to_vec(model.forward_as::<Tensor<4>>(x.clone()));
    assert_close(&float, &fx.f32("model.y_float"), 1e-5, 1e-5, "float model");

    prepare(&mut model, QConfig::default_ptq(backend), &device).unwrap();
    assert!(
        model.hs.output_observer().is_some(),
        "Hardswish is observed"
    );
    assert!(model.pool.output_observer().is_none(), "MaxPool2d is not");
    let _ = model.forward_as::<Tensor<4>>(fx.tensor("model.cal", &device));
    convert(&mut model, engine).unwrap();
    let tag = format!("model_{engine}");
    let (scales, zps) = (fx.f32(&format!("{tag}.qp")), fx.i64(&format!("{tag}.zp")));
    let ours = [
        model.quant.int8.unwrap().qparams,
        model.conv.int8.as_ref().unwrap().output_qparams(),
        model.hs.int8.unwrap().qparams,
    ];
    for (i, q) in ours.iter().enumerate() {
        assert_close(
            &[q.scale],
            &[scales[i]],
            0.0,
            1e-5,
            &format!("{tag} scale {i}"),
        );
        assert_eq!(q.zero_point as i64, zps[i], "{tag} zero-point {i}");
    }
    assert!(model.pool.is_converted() && model.pool.int8_output().is_none());

    let out = model.hs.int8.unwrap().qparams;
    let y = model.forward_as::<QBatch<4>>(x.clone()).unwrap();
    assert_eq!(y.dims(), [2, 8, 5, 5]);
    let ours = int_repr(&to_vec(y), out);
    let theirs = u8s(&fx, &format!("{tag}.y"));
    let equal = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    println!(
        "{tag}: {equal} of {} int8 outputs equal PyTorch's",
        theirs.len()
    );
    assert_eq!(ours, theirs, "{tag}");

    // The int8 state dict has no max-pooling entries, and loads back into a fresh model.
    let state = int8_state_dict(&model).unwrap();
    assert!(
        state.keys().all(|k| !k.starts_with("pool")),
        "{:?}",
        state.keys()
    );
    assert!(state.contains_key("hs.scale") && state.contains_key("hs.zero_point"));
    let mut loaded = Tiny::new(&fx, &device);
    load_int8_state_dict(&mut loaded, &state, engine).unwrap();
    let again = to_vec(loaded.forward_as::<QBatch<4>>(x).unwrap());
    assert_eq!(int_repr(&again, out), theirs, "{tag} loaded");
}

#[test]
fn tiny_model_matches_pytorch_qnnpack() {
    tiny_model_matches_pytorch(QuantBackend::Qnnpack, Engine::Qnnpack);
}

#[test]
fn tiny_model_matches_pytorch_x86() {
    tiny_model_matches_pytorch(QuantBackend::X86, Engine::X86);
}

#[test]
fn the_walk_lists_both_layers() {
    let fx = fixture();
    let model = Tiny::new(&fx, &Device::flex());
    let mut kinds = Vec::new();
    model
        .visit_layers_ref(&mut |path, layer| {
            kinds.push(format!("{path}:{}", layer.kind()));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        kinds,
        [
            "quant:QuantStub",
            "conv:ConvBnAct",
            "hs:Hardswish",
            "pool:MaxPool2d",
            "dequant:DeQuantStub"
        ]
    );
}
