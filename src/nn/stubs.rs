//! `QuantStub` / `DeQuantStub`: where a model enters and leaves the quantized domain
//! (`torch.ao.quantization.QuantStub` / `DeQuantStub`).

use burn::module::Module;
use burn::tensor::Tensor;

use super::batch::Batch;
use super::output_layer::impl_output_layer;
use super::post_process::{ActivationPostProcess, PostProcess};
use super::qbatch::QuantizedOutput;
use crate::onnx::graph::not_converted;
use crate::onnx::{Act, Builder, ExportKind, INPUT_NAME};
use crate::{Error, Result};

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

    /// The stub on the graph input: the input itself (float form), or its `QuantizeLinear`
    /// with the converted qparams (int8) or the fake-quant's (QDQ).
    pub fn onnx(&self, graph: &mut Builder, path: &str) -> Result<Act> {
        let q = match graph.kind {
            ExportKind::Float => return Ok(Act::Float(INPUT_NAME.to_string())),
            ExportKind::Int8 => {
                let out = self.int8.ok_or_else(|| not_converted(path))?;
                graph.int8_output(path, out.qparams)?
            }
            ExportKind::FakeQuant => self
                .activation_post_process
                .onnx_output(graph, path)?
                .ok_or_else(|| {
                    Error::Quant(format!(
                        "ONNX QDQ export: the model's QuantStub `{path}` has no fake-quant \
                         (prepare_qat the model first, or export it as float)"
                    ))
                })?,
        };
        let name = graph.quantize(INPUT_NAME, &q, path)?;
        Ok(Act::Quant(name, q))
    }
}

// `Quantize.from_float`: the stub's observer gives the input's scale and zero-point; one that
// saw no data means the model was not calibrated.
impl_output_layer!(QuantStub, "QuantStub", Err);

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
