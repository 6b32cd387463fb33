//! The names the eager-mode workflow needs, for `use burn_qat::prelude::*;`: the quantizable
//! layers and batch types a model is written with, the stage functions in workflow order
//! (`replace_relu` → `fuse_modules(_qat)` → `prepare(_qat)` → the QAT switches → `convert`),
//! the qconfig presets, the int8 engines, saving / loading the int8 model and ONNX export.
//! PyTorch users know them from `torch.ao.quantization`.
//!
//! `Result` and `Error` are left out on purpose: a glob import would shadow `std`'s `Result`.

pub use crate::convert::{convert, strip_float};
pub use crate::export::{ExportKind, OnnxBatch, save_onnx, trace_onnx};
pub use crate::fuse::{fuse_modules, fuse_modules_qat};
pub use crate::impl_quantizable;
pub use crate::int8::Engine;
pub use crate::io::{load_int8_model, save_int8_model};
pub use crate::nn::{
    Activation, AvgPool2d, AvgPool2dConfig, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub,
    FeatureBatch, FloatFunctional, Hardsigmoid, Hardswish, ImageBatch, ImageClassifier,
    LinearBnAct, LinearBnActConfig, MaxPool2d, MaxPool2dConfig, QBatch, QuantLayer, QuantOp,
    QuantStub, Quantizable,
};
pub use crate::quant::{QConfig, QConfigMapping, QuantBackend};
pub use crate::quantize::{
    disable_fake_quant, disable_observer, enable_fake_quant, enable_observer,
    enable_param_learning, enable_static_estimate, enable_static_observation, freeze_bn_stats,
    prepare, prepare_qat, replace_relu, update_bn_stats,
};
