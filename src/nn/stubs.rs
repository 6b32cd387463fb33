//! `QuantStub` / `DeQuantStub`: where a model enters and leaves the quantized domain
//! (`torch.ao.quantization.QuantStub` / `DeQuantStub`).

use burn::module::Module;
use burn::tensor::Tensor;

use super::post_process::{ActivationPostProcess, PostProcess};

/// Marks a float input to be quantized. Identity in float mode; observes after `prepare`,
/// fake-quantizes after `prepare_qat`; quantizes to int8 after `convert`.
#[derive(Module, Debug, Default)]
pub struct QuantStub {
    /// The input's observer or fake-quant (PyTorch's attribute name).
    pub activation_post_process: ActivationPostProcess,
}

impl QuantStub {
    /// A float-mode stub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Identity, observer or fake-quant of `x`, by stage.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.activation_post_process.post_process(x)
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

    /// Identity in float and QAT mode.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        x
    }
}
