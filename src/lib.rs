//! # burn-qat
//!
//! PyTorch's eager-mode quantization workflow (`torch.ao.quantization`) for the
//! [Burn](https://burn.dev) deep-learning framework: make a float model quantizable, fuse it,
//! fine-tune it with quantization-aware training, and convert it to an int8 model.
//!
//! The crate is laid out in workflow order:
//! - [`device`]: Burn devices by name (`flex`, `wgpu`, `cuda`) for `--device` flags;
//! - [`data`]: the embedded MNIST digits, ImageFolder, CIFAR-10 and torchvision-style transforms;
//! - [`models`]: MobileNetV2 (float) and, later, its quantizable form;
//! - [`numerics`]: scalar numerics below the kernels and `quant` (round half to even);
//! - [`quant`]: quantization schemes, qparams, observers, fake-quant and qconfigs;
//! - [`ops`]: custom differentiable ops with fast CPU kernels (depthwise convolution);
//! - [`nn`]: quantizable layers, `FloatFunctional`, stubs, the [`nn::Quantizable`] walk;
//! - [`fuse`]: module fusion (`fuse_modules`, `fuse_modules_qat`, batch-norm folding);
//! - [`quantize`]: `replace_relu`, `prepare`, `prepare_qat` and the QAT schedule switches;
//! - [`convert`]: prepared / QAT layers to their int8 form;
//! - [`int8`]: the int8 tensor type and int8 kernels with PyTorch's qnnpack and x86 (fbgemm)
//!   arithmetic;
//! - [`export`]: ONNX export (int8 QDQ, float, QAT fake-quant as QDQ);
//! - [`infer`]: batch inference from `.npy` files (the CLI's `infer`);
//! - [`mod@bench`]: forward-pass latency of a checkpoint (the CLI's `bench`);
//! - [`io`]: reading PyTorch checkpoints and `.npy` arrays;
//! - [`limits`]: size checks against the machine's memory before allocation;
//! - [`prelude`]: the workflow's names for one glob import.
//!
//! ## Features
//!
//! None is on by default: the library alone builds none of the tools' dependencies.
//! - `mnist`: `data::mnist`, the embedded MNIST digits (and `FinetuneData::embedded_mnist`);
//! - `image-folder`: `data::image_folder`, ImageFolder directories (image decoding);
//! - `download`: `models::pretrained`, torchvision's weights downloaded into a cache;
//! - `progress`: a progress bar per epoch in [`finetune::run`];
//! - `cli`: the `burn-qat` binary;
//! - `wgpu`, `cuda`: Burn's GPU backends for [`device`].

// docs.rs (see `[package.metadata.docs.rs]`) marks the items that need a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bench;
pub mod convert;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod finetune;
pub mod fuse;
pub mod infer;
pub mod int8;
pub mod io;
pub mod limits;
pub mod models;
pub mod nn;
pub mod numerics;
pub mod onnx;
pub mod ops;
pub mod prelude;
pub mod quant;
pub mod quantize;
pub mod state;

pub use error::{Error, Result};
