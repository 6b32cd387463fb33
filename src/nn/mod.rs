//! Quantization-aware layers: PyTorch-parity batch norm, and (to come) FloatFunctional, stubs
//! and the fused QAT modules of `torch.ao.nn.intrinsic.qat`.

pub mod batch_norm;

pub use batch_norm::{BatchNorm2d, BatchNorm2dConfig};
