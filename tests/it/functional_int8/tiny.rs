//! PyTorch's tiny model of `scripts/gen_functional_int8_fixtures.py` with this crate's layers:
//! `QuantStub → (Conv2d(3, 13, 1), Conv2d(3, 8, 3)) → cat → Conv2d(21, 21, 5, stride 5) →
//! Hardsigmoid → mul(gate, cat) → channel_shuffle(3) → DeQuantStub`, through PTQ (prepare,
//! calibration, convert) per engine: the qparams the observers give, and the int8 output bit
//! for bit. The cat runs on two convolutions' channels-last outputs (PyTorch's NHWC fast path),
//! the mul broadcasts the `[N, 21, 1, 1]` gate as MobileNetV3's SE block does.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use burn_qat::convert::convert;
use burn_qat::int8::Engine;
use burn_qat::nn::{
    Activation, ConvBnAct, ConvBnActConfig, DeQuantStub, FloatFunctional, Hardsigmoid, ImageBatch,
    QBatch, QuantStub,
};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::prepare;

use super::{fixture, u8s};
use crate::common::{Fixture, assert_close, to_vec};

#[derive(Module, Debug)]
struct Tiny {
    quant: QuantStub,
    a: ConvBnAct,
    b: ConvBnAct,
    cat: FloatFunctional,
    se: ConvBnAct,
    gate: Hardsigmoid,
    mul: FloatFunctional,
    dequant: DeQuantStub,
}

burn_qat::impl_quantizable!(Tiny {
    quant,
    a,
    b,
    cat,
    se,
    gate,
    mul,
    dequant
});

/// A plain convolution with bias and the fixture's weights.
fn conv(fx: &Fixture, name: &str, io: [usize; 2], kernel: usize, stride: usize) -> ConvBnAct {
    let device = Device::flex();
    let mut c = ConvBnActConfig::new(io[0], io[1])
        .with_kernel_size(kernel)
        .with_stride(stride)
        .with_batch_norm(false)
        .with_bias(true)
        .with_activation(Activation::Identity)
        .init(&device);
    c.conv.weight = Param::from_tensor(fx.tensor(&format!("model.{name}.weight"), &device));
    c.conv.bias = Some(Param::from_tensor(
        fx.tensor(&format!("model.{name}.bias"), &device),
    ));
    c
}

impl Tiny {
    fn new(fx: &Fixture) -> Self {
        Tiny {
            quant: QuantStub::new(),
            a: conv(fx, "a", [3, 13], 1, 1),
            b: conv(fx, "b", [3, 8], 3, 1),
            cat: FloatFunctional::new(),
            se: conv(fx, "se", [21, 21], 5, 5),
            gate: Hardsigmoid::new(),
            mul: FloatFunctional::new(),
            dequant: DeQuantStub::new(),
        }
    }

    fn body<X: ImageBatch>(&self, x: Tensor<4>) -> X {
        let x: X = self.quant.forward(x);
        let c = self
            .cat
            .cat(vec![self.a.forward(x.clone()), self.b.forward(x)], 1);
        let y = self
            .mul
            .mul(self.gate.forward(self.se.forward(c.clone())), c);
        y.channel_shuffle(3)
    }

    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> X::Float {
        self.dequant.forward(self.body::<X>(x))
    }
}

fn tiny_model_matches_pytorch(backend: QuantBackend, engine: Engine) {
    let fx = fixture();
    let device = Device::flex();
    let mut model = Tiny::new(&fx);
    let x: Tensor<4> = fx.tensor("model.x", &device);
    let float = to_vec(model.forward_as::<Tensor<4>>(x.clone()));
    assert_close(&float, &fx.f32("model.y_float"), 1e-5, 1e-5, "float model");

    prepare(&mut model, QConfig::default_ptq(backend), &device).unwrap();
    let _ = model.forward_as::<Tensor<4>>(fx.tensor("model.cal", &device));
    convert(&mut model, engine).unwrap();
    let tag = format!("model_{engine}");
    let (scales, zps) = (fx.f32(&format!("{tag}.qp")), fx.i64(&format!("{tag}.zp")));
    let ours = [
        model.quant.int8.unwrap().qparams,
        model.cat.int8.unwrap().qparams,
        model.mul.int8.unwrap().qparams,
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
    let y = model.body::<QBatch<4>>(x);
    let y = y.tensor().unwrap();
    assert_eq!(y.shape(), [2, 21, 5, 5]);
    let ours = y.to_contiguous().data().to_vec();
    let theirs = u8s(&fx, &format!("{tag}.y"));
    let equal = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    eprintln!("{tag}: {equal}/{} int8 outputs equal", theirs.len());
    assert_eq!(ours, theirs, "{tag}");
}

#[test]
fn tiny_se_shuffle_model_matches_pytorch_qnnpack() {
    tiny_model_matches_pytorch(QuantBackend::Qnnpack, Engine::Qnnpack);
}

#[test]
fn tiny_se_shuffle_model_matches_pytorch_x86() {
    tiny_model_matches_pytorch(QuantBackend::X86, Engine::X86);
}
