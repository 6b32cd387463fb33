//! Quantization-aware layers: PyTorch-parity batch norm, `FloatFunctional`, the quant/dequant
//! stubs and their pluggable activation post-processes.

pub mod batch_norm;
pub mod float_functional;
pub mod post_process;
pub mod qat;
pub mod stubs;

pub use batch_norm::{BatchNorm2d, BatchNorm2dConfig};
pub use float_functional::FloatFunctional;
pub use post_process::{ActivationPostProcess, PostProcess};
pub use stubs::{DeQuantStub, QuantStub};
