//! A tiny quantizable image classifier that is not MobileNetV2, for the generic paths
//! (fine-tuning, checkpoints, `resume`, data-parallel training, `strip_float`):
//! `QuantStub → ConvBnAct(3→8, stride 2, BN, ReLU6) → global average pool → LinearBnAct(8→10)
//! → DeQuantStub`, as `examples/custom_cnn_qat.rs` writes a model of its own.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use burn_qat::impl_quantizable;
use burn_qat::nn::{
    Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, ImageBatch, ImageClassifier, LinearBnAct,
    LinearBnActConfig, QuantStub,
};

#[derive(Module, Debug)]
pub struct TinyClassifier {
    pub quant: QuantStub,
    pub conv: ConvBnAct,
    pub fc: LinearBnAct,
    pub dequant: DeQuantStub,
}

impl_quantizable!(TinyClassifier {
    quant,
    conv,
    fc,
    dequant
});

impl TinyClassifier {
    /// Random weights, 10 classes, RGB input.
    pub fn new(device: &Device) -> Self {
        TinyClassifier {
            quant: QuantStub::new(),
            conv: ConvBnActConfig::new(3, 8).with_stride(2).init(device),
            fc: LinearBnActConfig::new(8, 10).init(device),
            dequant: DeQuantStub::new(),
        }
    }
}

impl ImageClassifier for TinyClassifier {
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let pooled = self.conv.forward(x).global_avg_pool_flatten();
        self.dequant.forward(self.fc.forward(pooled))
    }
}
