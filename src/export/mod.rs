//! Exporting models to formats other runtimes load: ONNX ([`onnx`]), written through a small
//! hand-written subset of `onnx.proto` ([`proto`]).

pub mod onnx;
pub mod proto;

pub use onnx::{
    ExportKind, export_mobilenet_v2, export_mobilenet_v2_int8, to_onnx_bytes, to_onnx_model,
};
