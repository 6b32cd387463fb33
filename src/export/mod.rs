//! Exporting models to formats other runtimes load: ONNX ([`onnx`]: the three forms and the
//! layers' nodes), laid out by tracing the model's own forward ([`trace`]), built on the graph
//! under construction (`graph`) and each layer's weights and output quantization by form
//! (`layer_parts`), and written through a small hand-written subset of `onnx.proto`
//! ([`proto`]).

mod graph;
mod layer_parts;
pub mod onnx;
pub mod proto;
pub mod trace;

pub use onnx::{ExportKind, save_onnx};
pub use trace::{OnnxBatch, trace_onnx};
