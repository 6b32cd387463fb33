//! Test-only package: see `tests/onnx_export.rs`.
