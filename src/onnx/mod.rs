//! Building ONNX graphs (opset 13): the graph under construction and its quantization
//! primitives ([`graph`]), what a weighted layer writes in each export form ([`parts`]), and
//! a hand-written subset of `onnx.proto` ([`proto`]). Layers write their own nodes with these
//! (each layer's `onnx` method); [`crate::export`] lays a model's graph out by tracing its
//! forward. Nothing here knows a layer or a model.

pub mod graph;
pub mod parts;
pub mod proto;

pub use graph::{Act, ActQ, Builder};
pub use parts::{Bias, BnParams, LayerParts, OnnxActivation, Weight};

/// The ONNX opset the exporter writes (`ai.onnx` domain): per-axis `QuantizeLinear` /
/// `DequantizeLinear` need 13.
pub const OPSET: i64 = 13;
/// The ONNX IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
/// Name of the graph's input.
pub const INPUT_NAME: &str = "input";
/// Name of the graph's output.
pub const OUTPUT_NAME: &str = "logits";

/// Which form of the model to write; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// The converted model as a QDQ graph with int8 weights and int32 biases.
    Int8,
    /// The float network.
    Float,
    /// A QAT model: float network with Q/DQ pairs for its fake-quants.
    FakeQuant,
}

impl ExportKind {
    /// The form's name in the model's metadata (`burn_qat.kind`).
    pub fn name(self) -> &'static str {
        match self {
            ExportKind::Int8 => "int8",
            ExportKind::Float => "float",
            ExportKind::FakeQuant => "qdq",
        }
    }
}
