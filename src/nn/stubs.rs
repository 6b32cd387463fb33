//! `QuantStub` / `DeQuantStub`: where a model enters and leaves the quantized domain
//! (`torch.ao.quantization.QuantStub` / `DeQuantStub`).

use burn::module::Module;
use burn::tensor::Tensor;

use super::batch::Batch;
use super::layer::{Boundary, QuantLayer};
use super::output_layer::impl_output_layer;
use super::post_process::{ActivationPostProcess, PostProcess};
use super::qbatch::QuantizedOutput;
use crate::onnx::graph::not_converted;
use crate::onnx::{Act, Builder, ExportKind};
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

    /// The model's float input `x` entering as a batch: identity, observer or fake-quant (float
    /// batches, by stage), or `x` quantized with the converted scale and zero-point (int8
    /// batches).
    pub fn forward<X: Batch<D>, const D: usize>(&self, x: Tensor<D>) -> X {
        X::quantize(self, x)
    }

    /// The stub inside a model, after layers kept in float (`qconfig = None`): the float batch
    /// `x` becomes quantized, as [`forward`](Self::forward) does with the model's input.
    pub fn forward_batch<X: Batch<D>, const D: usize>(&self, x: X) -> X {
        X::quantize_batch(self, x)
    }

    /// The stub's nodes on the float value `x`: `x` itself (float form, or a stub left in
    /// float), or its `QuantizeLinear` with the converted qparams (int8) or the fake-quant's
    /// (QDQ).
    pub fn onnx(&self, graph: &mut Builder, path: &str, x: &Act) -> Result<Act> {
        let prepared = self.activation_post_process.observer().is_some();
        let q = match graph.layer_form(path, prepared, self.int8.is_some())? {
            ExportKind::Float => return Ok(x.clone()),
            ExportKind::Int8 => {
                let out = self.int8.ok_or_else(|| not_converted(path))?;
                graph.int8_output(path, out.qparams)?
            }
            ExportKind::FakeQuant => self
                .activation_post_process
                .onnx_output(graph, path)?
                .ok_or_else(|| {
                    Error::Quant(format!(
                        "ONNX QDQ export: the QuantStub `{path}` has no fake-quant (prepare_qat \
                         the model first, or export it as float)"
                    ))
                })?,
        };
        let x = graph.float_input(x, path)?;
        let name = graph.quantize(&x, &q, path)?;
        Ok(Act::Quant(name, q))
    }
}

// `Quantize.from_float`: the stub's observer gives the input's scale and zero-point; one that
// saw no data means the model was not calibrated.
impl_output_layer!(QuantStub, "QuantStub", Err, Some(Boundary::Quantize));

/// Marks where the model returns to float. Identity until `convert`, where it dequantizes.
#[derive(Module, Debug, Default)]
pub struct DeQuantStub;

impl DeQuantStub {
    /// A stub.
    pub fn new() -> Self {
        Self
    }

    /// The model's output: identity on float batches; dequantizes int8 batches (`Result`,
    /// which carries the first error of the int8 forward).
    pub fn forward<X: Batch<D>, const D: usize>(&self, x: X) -> X::Float {
        x.dequantize()
    }

    /// The stub inside a model, before layers kept in float (`qconfig = None`): the batch
    /// goes on in float (dequantized, on int8 batches).
    pub fn forward_batch<X: Batch<D>, const D: usize>(&self, x: X) -> X {
        X::dequantize_batch(self, x)
    }

    /// `DequantizeLinear` of a quantized value, for the float layers after the stub.
    pub fn onnx(&self, graph: &mut Builder, path: &str, x: &Act) -> Result<Act> {
        Ok(Act::Float(graph.float_input(x, path)?))
    }
}

/// A boundary with nothing to prepare, convert or save.
impl QuantLayer for DeQuantStub {
    fn kind(&self) -> &'static str {
        "DeQuantStub"
    }

    fn is_converted(&self) -> bool {
        true
    }

    fn boundary(&self) -> Option<Boundary> {
        Some(Boundary::Dequantize)
    }
}
