//! Exporting models to formats other runtimes load: ONNX ([`onnx`]), laid out by tracing the
//! model's own forward ([`trace`]) and written through a small hand-written subset of
//! `onnx.proto` ([`proto`]).

pub mod onnx;
pub mod proto;
pub mod trace;

pub use onnx::{ExportKind, save_onnx};
pub use trace::{OnnxBatch, trace_onnx};
