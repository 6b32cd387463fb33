//! Exporting models to formats other runtimes load: ONNX ([`onnx`]: the three forms, the
//! model proto and its file), laid out by tracing the model's own forward ([`trace`]): every
//! layer writes its own nodes with [`crate::onnx`]'s graph builder.

pub mod onnx;
pub mod trace;

pub use crate::onnx::proto;
pub use onnx::{ExportKind, save_onnx};
pub use trace::{OnnxBatch, trace_onnx};
