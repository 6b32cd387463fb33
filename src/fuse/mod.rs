//! Module fusion (`torch.ao.quantization.fuse_modules` / `fuse_modules_qat`): each layer fuses
//! itself ([`QuantLayer::fuse`]: conv+bn, conv+bn+relu, conv+relu, linear+bn, linear+relu);
//! these are the walks over a model. Batch-norm folding is [`crate::nn::bn_folding`].

pub use crate::nn::bn_folding::{self, fold_bn_into_conv, fold_bn_into_linear};

use crate::Result;
use crate::nn::{Fusion, QuantLayer, Quantizable};
use crate::quantize::on_copy;

/// Fuses every layer as `fusion` asks, all or nothing.
fn fuse_all<M: Quantizable + Clone>(model: &mut M, fusion: Fusion) -> Result<()> {
    on_copy(model, |m| {
        m.visit_layers(&mut |path, layer: &mut dyn QuantLayer| {
            layer.fuse(fusion).map_err(|e| e.at_layer(path))
        })
    })
}

/// Fuses for inference: batch norm is folded into the preceding conv/linear weights and bias
/// (`W' = W·γ/√(var+ε)`, `b' = (b−μ)·γ/√(var+ε) + β`) and ReLU becomes part of the layer.
/// Like PyTorch, only allowed in eval mode (`model.valid()`): a training-mode batch norm still
/// has statistics to learn. On error the model is unchanged.
pub fn fuse_modules<M: Quantizable + Clone>(model: &mut M) -> Result<()> {
    fuse_all(model, Fusion::Eval)
}

/// Fuses for quantization-aware training: batch norm stays and keeps learning its statistics;
/// after `prepare_qat` it is folded into the weight inside the forward
/// (`torch.ao.nn.intrinsic.qat.ConvBn2d`, ...). On error the model is unchanged.
pub fn fuse_modules_qat<M: Quantizable + Clone>(model: &mut M) -> Result<()> {
    fuse_all(model, Fusion::Qat)
}

/// The quantizable models' `fuse_model(is_qat)` (torchvision's `_fuse_modules(..., is_qat)`):
/// fuses every conv + BN (+ ReLU) for QAT (`is_qat`: BN kept and trained, [`fuse_modules_qat`])
/// or for inference (BN folded, [`fuse_modules`]; the model must be in eval mode).
pub fn fuse_model<M: Quantizable + Clone>(model: &mut M, is_qat: bool) -> Result<()> {
    if is_qat {
        fuse_modules_qat(model)
    } else {
        fuse_modules(model)
    }
}
