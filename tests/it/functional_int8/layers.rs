//! The operators through the layer traits: `FloatFunctional::mul` / `cat` and `Hardsigmoid` on
//! int8 batches (`QBatch`, entered through a converted `QuantStub`), `ImageBatch::channel_shuffle`
//! on float, int8 and traced batches, and a tiny model's ONNX export.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::export::{ExportKind, OnnxBatch, trace_onnx};
use burn_qat::int8::hardsigmoid::HARDSIGMOID_OUTPUT;
use burn_qat::int8::{Engine, QParamsPt, QTensor};
use burn_qat::nn::{
    Batch, DeQuantStub, FloatFunctional, Hardsigmoid, ImageBatch, QBatch, QuantStub,
    QuantizedOutput,
};

use super::{ENGINES, cases, count_equal, fixture, qparams, u8s};
use crate::common::{Fixture, assert_bits, to_vec};

/// A converted `QuantStub` with `q`.
fn stub(q: QParamsPt, engine: Engine) -> QuantStub {
    let mut stub = QuantStub::new();
    stub.int8 = Some(QuantizedOutput { qparams: q, engine });
    stub
}

/// The int8 batch holding the fixture's quint8 tensor `key` exactly (its dequantized values,
/// quantized again by a stub with the same qparams).
fn qbatch(fx: &Fixture, key: &str, q: QParamsPt, engine: Engine) -> QBatch<4> {
    let x = QTensor::from_raw(u8s(fx, key), &fx.shape(key), q).unwrap();
    let shape: [usize; 4] = x.shape().try_into().unwrap();
    let float = Tensor::<4>::from_data(TensorData::new(x.dequantize(), shape), &Device::flex());
    let batch: QBatch<4> = stub(q, engine).forward(float);
    assert_eq!(
        batch.tensor().unwrap().data(),
        x.data(),
        "{key} entered exactly"
    );
    batch
}

fn bytes(y: QBatch<4>) -> Vec<u8> {
    y.tensor().unwrap().to_contiguous().data().to_vec()
}

fn functional(q: QParamsPt, engine: Engine) -> FloatFunctional {
    let mut f = FloatFunctional::new();
    f.int8 = Some(QuantizedOutput { qparams: q, engine });
    f
}

#[test]
fn float_functional_mul_and_cat_run_pytorchs_int8_ops() {
    let fx = fixture();
    let (mut equal, mut total) = (0, 0);
    for (engine, name) in ENGINES {
        for c in cases(&fx, "mul_") {
            let (q, flags) = (qparams(&fx, &c), fx.i64(&format!("{c}.flags")));
            if flags[3] == 1 {
                continue; // mul_relu: FloatFunctional has no such method, as in PyTorch
            }
            let a = qbatch(&fx, &format!("{c}.a"), q[0], engine);
            let b = qbatch(&fx, &format!("{c}.b"), q[1], engine);
            let f = functional(q[2], engine);
            let y = match flags[2] {
                1 => f.mul(b, a),
                _ => f.mul(a, b),
            };
            let expected = u8s(&fx, &format!("{c}.y_{name}"));
            let (e, t) = count_equal(&bytes(y), &expected, &format!("FloatFunctional {c} {name}"));
            (equal, total) = (equal + e, total + t);
        }
        // Batches from a QuantStub are NCHW: PyTorch's general path (the NHWC fast path is
        // the op test's).
        for c in cases(&fx, "cat_") {
            let (q, meta) = (qparams(&fx, &c), fx.i64(&format!("{c}.meta")));
            let (dim, n) = (meta[0] as usize, meta[3] as usize);
            if meta[1] == 1 {
                continue;
            }
            let xs = (0..n)
                .map(|i| qbatch(&fx, &format!("{c}.x{i}"), q[i], engine))
                .collect();
            let y = functional(q[n], engine).cat(xs, dim);
            let expected = u8s(&fx, &format!("{c}.y_{name}"));
            let (e, t) = count_equal(&bytes(y), &expected, &format!("FloatFunctional {c} {name}"));
            (equal, total) = (equal + e, total + t);
        }
    }
    assert_eq!(equal, total, "{equal}/{total} equal to PyTorch's");
}

#[test]
fn hardsigmoid_layer_runs_float_and_int8_as_pytorch() {
    let fx = fixture();
    let hs = Hardsigmoid::new();
    let device = Device::flex();
    let y: Tensor<1> = hs.forward(fx.tensor::<1>("float_hsig.x", &device));
    assert_bits(&to_vec(y), &fx.f32("float_hsig.y"), "float hardsigmoid");
    for c in cases(&fx, "hsig_") {
        let q = qparams(&fx, &c)[0];
        for (engine, key) in [(Engine::Qnnpack, "y_qnnpack"), (Engine::X86, "y_x86_nchw")] {
            let y = hs.forward(qbatch(&fx, &format!("{c}.x"), q, engine));
            assert_eq!(y.tensor().unwrap().qparams(), HARDSIGMOID_OUTPUT);
            let expected = u8s(&fx, &format!("{c}.{key}"));
            let (e, t) = count_equal(&bytes(y), &expected, &format!("Hardsigmoid {c} {key}"));
            assert_eq!(e, t);
        }
    }
}

#[test]
fn channel_shuffle_runs_on_float_and_int8_batches() {
    let fx = fixture();
    let device = Device::flex();
    let q = qparams(&fx, "shuffle")[0];
    for groups in [1, 2, 3, 4, 6] {
        let xf: Tensor<4> = fx.tensor("shuffle.xf", &device);
        let yf = to_vec(xf.channel_shuffle(groups));
        assert_bits(
            &yf,
            &fx.f32(&format!("shuffle.yf_g{groups}")),
            "float shuffle",
        );
        for (engine, _) in ENGINES {
            let y = qbatch(&fx, "shuffle.x", q, engine).channel_shuffle(groups);
            assert_eq!(y.tensor().unwrap().qparams(), q);
            let expected = u8s(&fx, &format!("shuffle.y_g{groups}"));
            assert_eq!(bytes(y), expected, "int8 shuffle in {groups} groups");
        }
    }
    // A bad group count is the forward's error, not a panic.
    let bad = qbatch(&fx, "shuffle.x", q, Engine::X86).channel_shuffle(5);
    let err = bad.dequantize().unwrap_err();
    assert!(err.to_string().contains("12 channels"), "{err}");
    // As is a mul of batches that do not broadcast.
    let f = functional(q, Engine::X86);
    let x = qbatch(&fx, "shuffle.x", q, Engine::X86);
    let taller: QBatch<4> = stub(q, Engine::X86).forward(Tensor::zeros([2, 12, 10, 7], &device));
    let err = f.mul(x, taller).dequantize().unwrap_err();
    assert!(err.to_string().contains("do not broadcast"), "{err}");
}

#[derive(Module, Debug)]
struct Tiny {
    quant: QuantStub,
    mul: FloatFunctional,
    gate: Hardsigmoid,
    dequant: DeQuantStub,
}

burn_qat::impl_quantizable!(Tiny {
    quant,
    mul,
    gate,
    dequant
});

impl Tiny {
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> X::Float {
        let x: X = self.quant.forward(x);
        let y = self.mul.mul(x.clone(), x.channel_shuffle(2));
        self.dequant.forward(self.gate.forward(y))
    }
}

#[test]
fn a_model_with_the_new_ops_exports_to_onnx() {
    let mut model = Tiny {
        quant: QuantStub::new(),
        mul: FloatFunctional::new(),
        gate: Hardsigmoid::new(),
        dequant: DeQuantStub::new(),
    };
    let ops = |model: &Tiny, kind| -> Vec<String> {
        trace_onnx(model, kind, "tiny", [1, 4, 6, 6], |m, x| {
            m.forward_as::<OnnxBatch<4>>(x)
        })
        .unwrap()
        .graph
        .unwrap()
        .node
        .iter()
        .filter_map(|n| n.op_type.clone())
        .collect()
    };
    let float = ops(&model, ExportKind::Float);
    for op in ["Shape", "Reshape", "Transpose", "Mul", "HardSigmoid"] {
        assert!(float.contains(&op.to_string()), "{op} in {float:?}");
    }
    let q = QParamsPt::new(0.05, 10).unwrap();
    model.quant = stub(q, Engine::X86);
    model.mul = functional(q, Engine::X86);
    let int8 = ops(&model, ExportKind::Int8);
    let quantizes = int8.iter().filter(|o| *o == "QuantizeLinear").count();
    // The input, the shuffle (keeping its qparams), the mul and the gate.
    assert_eq!(quantizes, 4, "{int8:?}");
    // The same model's int8 forward runs.
    let x = Tensor::<4>::ones([1, 4, 6, 6], &Device::flex());
    let y = model.forward_as::<QBatch<4>>(x).unwrap();
    assert_eq!(y.dims(), [1, 4, 6, 6]);
}
