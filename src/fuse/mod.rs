//! Module fusion (`torch.ao.quantization.fuse_modules`): batch-norm folding for inference.

pub mod bn_folding;

pub use bn_folding::{fold_bn_into_conv, fold_bn_into_linear};
