//! The int8 operators of MobileNetV3 and ShuffleNetV2, held to PyTorch 2.5.1
//! (`scripts/gen_functional_int8_fixtures.py`): quantized mul (equal shapes and the SE block's
//! channel broadcast), cat with requantization (PyTorch's NHWC fast path and its other path),
//! hardsigmoid (fixed output qparams) and channel shuffle, every element equal to PyTorch's per
//! engine and per kernel set (the portable reference and AVX2, also against each other on
//! random data). `layers` runs them through `FloatFunctional`, `Hardsigmoid` and the batch
//! types; malformed shapes are typed errors.

mod layers;
mod tiny;

use burn_qat::Error;
use burn_qat::data::SplitMix64;
use burn_qat::int8::cat::Int8Cat;
use burn_qat::int8::hardsigmoid::{HARDSIGMOID_OUTPUT, hardsigmoid_tables, hardsigmoid_with};
use burn_qat::int8::kernels::bytewise::ByteKernels;
use burn_qat::int8::mul::{Int8Mul, MulParams};
use burn_qat::int8::shuffle::channel_shuffle;
use burn_qat::int8::{Engine, MemoryFormat, PoolInputLayout, QParamsPt, QTensor};

use crate::common::{Fixture, byte_kernel_sets, u8s};

const ENGINES: [(Engine, &str); 2] = [(Engine::Qnnpack, "qnnpack"), (Engine::X86, "x86")];

fn fixture() -> Fixture {
    Fixture::load("functional_int8.safetensors")
}

fn qparams(fx: &Fixture, case: &str) -> Vec<QParamsPt> {
    let (s, z) = (fx.f32(&format!("{case}.qp")), fx.i64(&format!("{case}.zp")));
    s.iter()
        .zip(&z)
        .map(|(&s, &z)| QParamsPt::new(s, z as i32).unwrap())
        .collect()
}

/// The NCHW fixture tensor `key`, stored channels-last when `channels_last`.
fn qtensor(fx: &Fixture, key: &str, q: QParamsPt, channels_last: bool) -> QTensor {
    let x = QTensor::from_raw(u8s(fx, key), &fx.shape(key), q).unwrap();
    match channels_last {
        true => x.to_format(MemoryFormat::ChannelsLast).into_owned(),
        false => x,
    }
}

fn nchw(y: &QTensor) -> Vec<u8> {
    y.to_contiguous().data().to_vec()
}

/// Counts equal elements, printing `what: equal/total equal`.
fn count_equal(actual: &[u8], expected: &[u8], what: &str) -> (usize, usize) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    let equal = actual.iter().zip(expected).filter(|(a, b)| a == b).count();
    eprintln!("{what}: {equal}/{} equal", expected.len());
    (equal, expected.len())
}

/// [`count_equal`] of `y` (NCHW) against case `c`'s PyTorch output of each engine, summed.
fn count_equal_per_engine(
    fx: &Fixture,
    c: &str,
    y: &QTensor,
    kernels: ByteKernels,
) -> (usize, usize) {
    let (mut equal, mut total) = (0, 0);
    for (_, engine) in ENGINES {
        let expected = u8s(fx, &format!("{c}.y_{engine}"));
        let what = format!("{c} {engine} {kernels:?}");
        let (e, t) = count_equal(&nchw(y), &expected, &what);
        (equal, total) = (equal + e, total + t);
    }
    (equal, total)
}

fn cases(fx: &Fixture, prefix: &str) -> Vec<String> {
    let cases: Vec<String> = fx
        .case_names()
        .into_iter()
        .filter(|c| c.starts_with(prefix))
        .collect();
    assert!(!cases.is_empty(), "no {prefix} cases in the fixture");
    cases
}

#[test]
fn int8_mul_is_bit_exact_per_engine_and_kernel_set() {
    let fx = fixture();
    let (mut equal, mut total) = (0, 0);
    for c in cases(&fx, "mul_") {
        let q = qparams(&fx, &c);
        let flags = fx.i64(&format!("{c}.flags"));
        let a = qtensor(&fx, &format!("{c}.a"), q[0], flags[0] == 1);
        let b = qtensor(&fx, &format!("{c}.b"), q[1], flags[1] == 1);
        let op = Int8Mul::new(q[2], flags[3] == 1);
        for kernels in byte_kernel_sets() {
            let y = match flags[2] {
                1 => op.forward_with(kernels, &b, &a),
                _ => op.forward_with(kernels, &a, &b),
            }
            .unwrap();
            assert_eq!(y.qparams(), q[2]);
            let (e, t) = count_equal_per_engine(&fx, &c, &y, kernels);
            (equal, total) = (equal + e, total + t);
        }
    }
    assert_eq!(
        equal, total,
        "mul: {equal}/{total} elements equal to PyTorch's"
    );
}

/// Every vector byte-kernel set this CPU runs (AVX2, AVX-512) against the reference.
#[test]
fn vector_mul_equals_the_reference_on_random_data() {
    for kernels in byte_kernel_sets() {
        if kernels != ByteKernels::Reference {
            mul_equals_the_reference_on_random_data(kernels);
        }
    }
}

fn mul_equals_the_reference_on_random_data(vector: ByteKernels) {
    let mut rng = SplitMix64::new(26);
    let mut compared = 0;
    for call in 0..300 {
        let len = (rng.next_u64() % 200) as usize;
        let byte = |rng: &mut SplitMix64| (rng.next_u64() % 256) as u8;
        let a: Vec<u8> = (0..len).map(|_| byte(&mut rng)).collect();
        let b: Vec<u8> = (0..len).map(|_| byte(&mut rng)).collect();
        // Multipliers from 2^-20 to 2^40: the largest saturate (and pass the f32 → i32 range).
        let exponent = (rng.next_u64() % 60) as i32 - 20;
        let p = MulParams {
            a_zero_point: byte(&mut rng) as i32,
            b_zero_point: byte(&mut rng) as i32,
            multiplier: 2f32.powi(exponent) * (1.0 + (rng.next_u64() % 1000) as f32 / 1000.0),
            zero_point: byte(&mut rng) as i32,
            lo: if call % 3 == 0 { byte(&mut rng) } else { 0 },
        };
        let (mut want, mut got) = (vec![0u8; len], vec![0u8; len]);
        ByteKernels::Reference.mul(&p, &a, &b, &mut want);
        vector.mul(&p, &a, &b, &mut got);
        assert_eq!(got, want, "{p:?}");
        compared += len;
    }
    eprintln!("{vector:?} mul: {compared}/{compared} equal to the reference");
}

#[test]
fn int8_cat_is_bit_exact_per_engine_and_kernel_set() {
    let fx = fixture();
    let (mut equal, mut total) = (0, 0);
    for c in cases(&fx, "cat_") {
        let q = qparams(&fx, &c);
        let meta = fx.i64(&format!("{c}.meta"));
        let (dim, channels_last, n) = (meta[0] as usize, meta[1] == 1, meta[3] as usize);
        // PyTorch's own storage, and for its general path also inputs the crate holds
        // channels-last (the values must not depend on the storage).
        for stored_cl in [channels_last, true] {
            let xs: Vec<QTensor> = (0..n)
                .map(|i| qtensor(&fx, &format!("{c}.x{i}"), q[i], stored_cl))
                .collect();
            let refs: Vec<&QTensor> = xs.iter().collect();
            for kernels in byte_kernel_sets() {
                let y = Int8Cat::new(q[n])
                    .forward_with(kernels, &refs, dim, channels_last)
                    .unwrap();
                // Channels-last where every input was (4-D, along the channels).
                let cl = y.format() == MemoryFormat::ChannelsLast;
                let four_d = y.shape().len() == 4;
                assert_eq!(
                    cl,
                    dim == 1 && four_d && stored_cl,
                    "{c}: the output's format"
                );
                let (e, t) = count_equal_per_engine(&fx, &c, &y, kernels);
                (equal, total) = (equal + e, total + t);
            }
        }
    }
    assert_eq!(
        equal, total,
        "cat: {equal}/{total} elements equal to PyTorch's"
    );
}

/// The fast path's rule matters: the same NHWC inputs through the other path differ from
/// PyTorch on the sensitive qparams (so the test above can fail).
#[test]
fn int8_cat_nhwc_fast_path_is_needed_for_pytorchs_bits() {
    let fx = fixture();
    let c = "cat_nhwc";
    let q = qparams(&fx, c);
    let xs: Vec<QTensor> = (0..3)
        .map(|i| qtensor(&fx, &format!("{c}.x{i}"), q[i], true))
        .collect();
    let refs: Vec<&QTensor> = xs.iter().collect();
    let y = Int8Cat::new(q[3]).forward(&refs, 1, false).unwrap();
    let (equal, total) = count_equal(&nchw(&y), &u8s(&fx, &format!("{c}.y_x86")), "slow path");
    assert!(equal < total, "the fixture's qparams tell the paths apart");
}

#[test]
fn int8_hardsigmoid_is_bit_exact_per_engine_and_kernel_set() {
    let fx = fixture();
    let (mut equal, mut total) = (0, 0);
    let mut tally = |(e, t): (usize, usize)| (equal, total) = (equal + e, total + t);
    for c in cases(&fx, "hsig_") {
        let q = qparams(&fx, &c)[0];
        for (engine, name) in ENGINES {
            let tables = hardsigmoid_tables(q, engine);
            let table = u8s(&fx, &format!("{c}.table_{name}"));
            tally(count_equal(
                &tables.body,
                &table,
                &format!("{c} {name} table"),
            ));
            if engine == Engine::X86 {
                let tail = u8s(&fx, &format!("{c}.x86_tail_table"));
                tally(count_equal(
                    &tables.tail,
                    &tail,
                    &format!("{c} x86 tail table"),
                ));
            }
        }
        let runs = [
            (Engine::Qnnpack, PoolInputLayout::Contiguous, "y_qnnpack"),
            (Engine::X86, PoolInputLayout::Contiguous, "y_x86_nchw"),
            (Engine::X86, PoolInputLayout::ChannelsLast, "y_x86_nhwc"),
        ];
        for (engine, layout, key) in runs {
            let expected = u8s(&fx, &format!("{c}.{key}"));
            for stored_cl in [false, true] {
                let x = qtensor(&fx, &format!("{c}.x"), q, stored_cl);
                for kernels in byte_kernel_sets() {
                    let y = hardsigmoid_with(kernels, &x, engine, layout).unwrap();
                    assert_eq!(y.qparams(), HARDSIGMOID_OUTPUT);
                    assert_eq!(y.format(), x.format(), "the input's memory format");
                    let what = format!("{c} {key} stored cl {stored_cl} {kernels:?}");
                    tally(count_equal(&nchw(&y), &expected, &what));
                }
            }
        }
    }
    assert_eq!(
        equal, total,
        "hardsigmoid: {equal}/{total} equal to PyTorch's"
    );
}

#[test]
fn int8_channel_shuffle_moves_bytes_as_pytorch() {
    let fx = fixture();
    let q = qparams(&fx, "shuffle")[0];
    for groups in [1, 2, 3, 4, 6] {
        let expected = u8s(&fx, &format!("shuffle.y_g{groups}"));
        for stored_cl in [false, true] {
            let x = qtensor(&fx, "shuffle.x", q, stored_cl);
            let y = channel_shuffle(&x, groups).unwrap();
            assert_eq!(y.qparams(), q, "qparams kept");
            assert_eq!(y.format(), x.format(), "the storage is kept");
            let y = y.to_contiguous();
            let (e, t) = count_equal(y.data(), &expected, &format!("shuffle g{groups}"));
            assert_eq!(e, t);
        }
    }
}

#[test]
fn malformed_shapes_are_typed_errors() {
    let q = QParamsPt::new(0.1, 3).unwrap();
    let t = |shape: &[usize]| QTensor::from_raw(vec![7; shape.iter().product()], shape, q).unwrap();
    let shape_err = |r: burn_qat::Result<QTensor>, what: &str| match r {
        Err(Error::Shape(m)) => eprintln!("{what}: {m}"),
        other => panic!("{what}: expected a shape error, got {other:?}"),
    };
    let mul = Int8Mul::new(q, false);
    shape_err(
        mul.forward(&t(&[1, 4, 3, 3]), &t(&[1, 3, 1, 1])),
        "mul 4 vs 3 channels",
    );
    shape_err(
        mul.forward(&t(&[1, 4, 3, 3]), &t(&[4, 1, 1])),
        "mul ranks 4 and 3",
    );
    shape_err(
        mul.forward(&t(&[2, 1]), &t(&[3, 2])),
        "mul [2, 1] by [3, 2]",
    );
    let cat = Int8Cat::new(q);
    let (a, b) = (t(&[1, 2, 3, 3]), t(&[1, 2, 4, 3]));
    shape_err(cat.forward(&[], 1, false), "cat of nothing");
    shape_err(cat.forward(&[&a, &b], 1, false), "cat with unequal heights");
    shape_err(cat.forward(&[&a, &b], 4, true), "cat along dim 4");
    shape_err(
        cat.forward(&[&a, &t(&[2, 3, 3])], 1, false),
        "cat of ranks 4 and 3",
    );
    shape_err(
        channel_shuffle(&t(&[2, 6, 3]), 2),
        "shuffle of a rank-3 tensor",
    );
    shape_err(
        channel_shuffle(&t(&[1, 6, 2, 2]), 4),
        "shuffle of 6 channels in 4 groups",
    );
    shape_err(channel_shuffle(&t(&[1, 6, 2, 2]), 0), "shuffle in 0 groups");
    assert!(
        channel_shuffle(&t(&[1, 0, 2, 2]), 3).is_ok(),
        "no channels: nothing to move"
    );
}

/// Broadcasting in every memory format pairing and along any size-1 dimensions gives the
/// elementwise products of the NCHW index rule (`MulParams::apply` at the broadcast indices).
#[test]
fn int8_mul_broadcasts_any_dimensions_in_any_memory_format() {
    let mut rng = SplitMix64::new(261);
    let full = [2, 3, 4, 5];
    let qa = QParamsPt::new(0.05, 120).unwrap();
    let qb = QParamsPt::new(0.02, 7).unwrap();
    let op = Int8Mul::new(QParamsPt::new(0.04, 90).unwrap(), false);
    let mut compared = 0;
    for small in [
        [2, 1, 4, 1],
        [1, 3, 1, 5],
        [2, 3, 1, 1],
        [1, 1, 4, 5],
        [1, 1, 1, 1],
    ] {
        let mut tensor = |shape: &[usize], q| {
            let n: usize = shape.iter().product();
            let data = (0..n).map(|_| (rng.next_u64() % 256) as u8).collect();
            QTensor::from_raw(data, shape, q).unwrap()
        };
        let (a, b) = (tensor(&full, qa), tensor(&small, qb));
        for (a_cl, b_cl, swap) in (0..8).map(|i| (i & 1 == 1, i & 2 == 2, i & 4 == 4)) {
            let fmt = |cl| match cl {
                true => MemoryFormat::ChannelsLast,
                false => MemoryFormat::Contiguous,
            };
            let (x, y) = (a.to_format(fmt(a_cl)), b.to_format(fmt(b_cl)));
            let (out, p) = match swap {
                true => (
                    op.forward_with(ByteKernels::detect(), &y, &x),
                    op.params(qb, qa),
                ),
                false => (
                    op.forward_with(ByteKernels::detect(), &x, &y),
                    op.params(qa, qb),
                ),
            };
            let (out, p) = (out.unwrap(), p.unwrap());
            assert_eq!(out.shape(), full);
            let got = nchw(&out);
            for (i, &g) in got.iter().enumerate() {
                let idx = [i / 60, i / 20 % 3, i / 5 % 4, i % 5];
                let j = (0..4).fold(0, |acc, d| acc * small[d] + idx[d].min(small[d] - 1));
                let (va, vb) = (a.data()[i], b.data()[j]);
                let want = if swap {
                    p.apply(vb, va)
                } else {
                    p.apply(va, vb)
                };
                assert_eq!(
                    g, want,
                    "{small:?} a_cl {a_cl} b_cl {b_cl} swap {swap} at {idx:?}"
                );
            }
            compared += got.len();
        }
    }
    eprintln!("broadcast mul: {compared}/{compared} equal to the index rule");
}
