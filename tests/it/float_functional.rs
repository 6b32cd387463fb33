//! `FloatFunctional` as `prepare_qat` leaves it (`torch.ao.nn.quantized.FloatFunctional` whose
//! `activation_post_process` is the engine's default QAT activation fake-quant): `add`,
//! `add_relu`, `mul` and `cat` over three batches each, against PyTorch
//! (`scripts/gen_quant_fixtures.py float_functional`) — outputs (bit for bit on flex),
//! straight-through gradients of both inputs, scale and zero-point after every batch — on every
//! device of `common::devices()` (GPU included in a `--features wgpu` build).

use crate::common::{Fixture, assert_close, assert_matches, devices, to_vec};
use burn::tensor::{Device, Tensor};
use burn_qat::nn::{ActivationPostProcess, FloatFunctional};
use burn_qat::quant::{QConfig, QuantBackend};

fn prepared(backend: QuantBackend, device: &Device) -> FloatFunctional {
    let fq = QConfig::default_qat(backend)
        .activation
        .fake_quantize()
        .init(1, device)
        .unwrap();
    FloatFunctional::with_post_process(ActivationPostProcess::FakeQuantize(fq))
}

fn apply(f: &FloatFunctional, op: &str, x: Tensor<4>, y: Tensor<4>) -> Tensor<4> {
    match op {
        "add" => f.add(x, y),
        "add_relu" => f.add_relu(x, y),
        "mul" => f.mul(x, y),
        "cat" => f.cat(vec![x, y], 1),
        other => panic!("no op {other}"),
    }
}

#[test]
fn prepared_float_functional_matches_pytorch() {
    let fx = Fixture::load("float_functional.safetensors");
    for device in devices() {
        for (backend, engine) in [
            (QuantBackend::X86, "x86"),
            (QuantBackend::Qnnpack, "qnnpack"),
        ] {
            for op in ["add", "add_relu", "mul", "cat"] {
                let f = prepared(backend, &device);
                for i in 0..3 {
                    let key = |k: &str| format!("{engine}.{op}.{i}.{k}");
                    let what = format!("{engine} {op} batch {i} on {device:?}");
                    let x: Tensor<4> = fx.tensor(&key("x"), &device);
                    let y: Tensor<4> = fx.tensor(&key("y"), &device);
                    let grads = device.is_autodiff().then(|| {
                        let (x, y) = (x.clone().require_grad(), y.clone().require_grad());
                        let out = apply(&f, op, x.clone(), y.clone());
                        let dout: Tensor<4> = fx.tensor(&key("dout"), &device);
                        let g = (out.clone() * dout).sum().backward();
                        (
                            to_vec(out),
                            to_vec(x.grad(&g).unwrap()),
                            to_vec(y.grad(&g).unwrap()),
                        )
                    });
                    let out = match &grads {
                        Some((out, ..)) => out.clone(),
                        None => to_vec(apply(&f, op, x, y)),
                    };
                    assert_matches(&out, &fx.f32(&key("out")), &device, &what);
                    if let Some((_, dx, dy)) = grads {
                        assert_close(&dx, &fx.f32(&key("dx")), 1e-6, 0.0, &what);
                        assert_close(&dy, &fx.f32(&key("dy")), 1e-6, 0.0, &what);
                    }
                    let qp = f
                        .activation_post_process
                        .fake_quantize()
                        .unwrap()
                        .current_qparams();
                    assert_matches(&qp.scale, &fx.f32(&key("scale")), &device, &what);
                    assert_eq!(qp.zero_point, fx.i64(&key("zero_point")), "{what}");
                }
            }
        }
    }
}
