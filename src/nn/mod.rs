//! Quantizable layers: PyTorch-parity batch norm, conv/linear (+BN)(+ReLU) layers that go
//! through every stage of the workflow, `FloatFunctional`, the quant/dequant stubs, their
//! pluggable activation post-processes, the traits a layer implements to own its stages
//! ([`QuantLayer`], [`QuantOp`]), and the [`Quantizable`] walk over a model.

pub mod activation;
pub mod adaptive_avg_pool;
pub mod avg_pool;
pub mod batch;
pub mod batch_norm;
pub mod bn_folding;
pub mod classifier;
pub mod conv_bn_act;
pub mod float_functional;
pub mod hardsigmoid;
pub mod hardswish;
pub mod layer;
pub mod linear_bn_act;
pub mod max_pool;
mod output_layer;
pub mod post_process;
pub mod qbatch;
pub mod quantizable;
pub mod stage;
pub mod stubs;
pub mod weighted;

pub use activation::Activation;
pub use adaptive_avg_pool::AdaptiveAvgPool2d;
pub use avg_pool::{AvgPool2d, AvgPool2dConfig};
pub use batch::{Batch, BinaryOp, FeatureBatch, ImageBatch};
pub use batch_norm::{BatchNorm2d, BatchNorm2dConfig};
pub use classifier::ImageClassifier;
pub use conv_bn_act::{ConvBnAct, ConvBnActConfig};
pub use float_functional::FloatFunctional;
pub use hardsigmoid::Hardsigmoid;
pub use hardswish::Hardswish;
pub use layer::{PrepareMode, QuantLayer, QuantOp};
pub use linear_bn_act::{LinearBnAct, LinearBnActConfig};
pub use max_pool::{MaxPool2d, MaxPool2dConfig};
pub use post_process::{ActivationPostProcess, PostProcess};
pub use qbatch::{QBatch, QuantizedOutput};
pub use quantizable::Quantizable;
pub use stage::Fusion;
pub use stubs::{DeQuantStub, QuantStub};
