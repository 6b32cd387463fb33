//! `QuantStub` / `DeQuantStub`: where a model enters and leaves the quantized domain
//! (`torch.ao.quantization.QuantStub` / `DeQuantStub`).

use burn::module::Module;
use burn::tensor::Tensor;

use super::batch::Batch;
use super::post_process::ActivationPostProcess;
use super::qbatch::QuantizedOutput;

/// Marks a float input to be quantized. Identity in float mode; observes after `prepare`,
/// fake-quantizes after `prepare_qat`; quantizes to int8 after `convert`.
#[derive(Module, Debug, Default)]
pub struct QuantStub {
    /// The input's observer or fake-quant (PyTorch's attribute name).
    pub activation_post_process: ActivationPostProcess,
    /// The quantization of the converted model (`torch.ao.nn.quantized.Quantize`).
    #[module(skip)]
    pub int8: Option<QuantizedOutput>,
}

impl QuantStub {
    /// A float-mode stub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Identity, observer or fake-quant of `x` (float batches, by stage), or `x` quantized
    /// with the converted scale and zero-point (int8 batches).
    pub fn forward<X: Batch<D>, const D: usize>(&self, x: Tensor<D>) -> X {
        X::quantize(self, x)
    }
}

/// Marks where the model returns to float. Identity until `convert`, where it dequantizes.
#[derive(Module, Debug, Default)]
pub struct DeQuantStub;

impl DeQuantStub {
    /// A stub.
    pub fn new() -> Self {
        Self
    }

    /// Identity on float batches; dequantizes int8 batches (`Result`, which carries the
    /// first error of the int8 forward).
    pub fn forward<X: Batch<D>, const D: usize>(&self, x: X) -> X::Float {
        x.dequantize()
    }
}
