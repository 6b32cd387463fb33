//! PyTorch's tiny model of `scripts/gen_pool_hardswish_fixtures.py` with this crate's layers:
//! `QuantStub → Conv2d(3, 8, 3, padding 1) → Hardswish → MaxPool2d → DeQuantStub`, with the
//! fixture's float weights. Also `onnx-check/tests/layers/pool_hardswish.rs`'s model.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use burn_qat::nn::{
    Activation, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, Hardswish, MaxPool2d,
    MaxPool2dConfig, QuantStub,
};

use crate::common::Fixture;

#[derive(Module, Debug)]
pub struct Tiny {
    pub quant: QuantStub,
    pub conv: ConvBnAct,
    pub hs: Hardswish,
    pub pool: MaxPool2d,
    pub dequant: DeQuantStub,
}

burn_qat::impl_quantizable!(Tiny {
    quant,
    conv,
    hs,
    pool,
    dequant
});

impl Tiny {
    /// The model with PyTorch's `MaxPool2d(3, 2, 1)`.
    pub fn new(fx: &Fixture, device: &Device) -> Self {
        let pool = MaxPool2dConfig::new([3, 3])
            .with_stride([2, 2])
            .with_padding([1, 1]);
        Self::with_pool(fx, pool, device)
    }

    /// The model with another max pooling.
    pub fn with_pool(fx: &Fixture, pool: MaxPool2dConfig, device: &Device) -> Self {
        let mut conv = ConvBnActConfig::new(3, 8)
            .with_batch_norm(false)
            .with_bias(true)
            .with_activation(Activation::Identity)
            .init(device);
        conv.conv.weight = Param::from_tensor(fx.tensor("model.weight", device));
        conv.conv.bias = Some(Param::from_tensor(fx.tensor("model.bias", device)));
        Tiny {
            quant: QuantStub::new(),
            conv,
            hs: Hardswish::new(),
            pool: pool.init().unwrap(),
            dequant: DeQuantStub::new(),
        }
    }

    /// The one forward, over every batch type.
    pub fn forward_as<X: Batch<4>>(&self, x: Tensor<4>) -> X::Float {
        let x: X = self.quant.forward(x);
        self.dequant
            .forward(self.pool.forward(self.hs.forward(self.conv.forward(x))))
    }
}
