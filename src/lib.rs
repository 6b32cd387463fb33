//! # burn-qat
//!
//! PyTorch's eager-mode quantization workflow (`torch.ao.quantization`) for the
//! [Burn](https://burn.dev) deep-learning framework: make a float model quantizable, fuse it,
//! fine-tune it with quantization-aware training, and convert it to an int8 model.
//!
//! The crate is laid out in workflow order:
//! - [`models`]: MobileNetV2 (float) and, later, its quantizable form;
//! - [`quant`]: quantization schemes, qparams, observers, fake-quant and qconfigs;
//! - [`nn`]: quantization-aware layers (PyTorch-parity batch norm, ...);
//! - [`fuse`]: module fusion (batch-norm folding);
//! - [`infer`]: batch inference from `.npy` files (the CLI's `infer`);
//! - [`io`]: reading PyTorch checkpoints and `.npy` arrays.

pub mod error;
pub mod fuse;
pub mod infer;
pub mod io;
pub mod models;
pub mod nn;
pub mod quant;

pub use error::{Error, Result};
