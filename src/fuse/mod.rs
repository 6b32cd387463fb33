//! Module fusion (`torch.ao.quantization.fuse_modules` / `fuse_modules_qat`): conv+bn,
//! conv+bn+relu, conv+relu, linear+bn, linear+relu.

pub mod bn_folding;

pub use bn_folding::{fold_bn_into_conv, fold_bn_into_linear};

use crate::nn::{Activation, Fusion, QuantLayer, Quantizable};
use crate::{Error, Result};

/// Checks that every conv/linear layer can be fused (not fused yet, no ReLU6 and, for
/// inference, no batch norm still training), so that an error leaves the model untouched.
fn check_fusable<M: Quantizable>(model: &mut M, for_inference: bool) -> Result<()> {
    model.visit_layers(&mut |_, layer| {
        let (fusion, activation, kind, bn_training) = match layer {
            QuantLayer::Conv(c) => (
                c.fusion,
                c.activation,
                "convolution",
                c.bn.as_ref().is_some_and(|bn| bn.training())
                    && c.conv.weight.device().is_autodiff(),
            ),
            QuantLayer::Linear(l) => (
                l.fusion,
                l.activation,
                "linear layer",
                l.bn.as_ref().is_some_and(|bn| bn.training())
                    && l.linear.weight.device().is_autodiff(),
            ),
            QuantLayer::Quant(_) | QuantLayer::Functional(_) => return Ok(()),
        };
        if fusion != Fusion::None {
            return Err(Error::Quant(format!("this {kind} is already fused")));
        }
        if activation == Activation::Relu6 {
            return Err(Error::Quant(format!(
                "a {kind} followed by ReLU6 cannot be fused; call replace_relu first"
            )));
        }
        if for_inference && bn_training {
            return Err(Error::Quant(
                "fuse_modules folds batch norm for inference and needs an eval-mode model (call \
                 .valid()); use fuse_modules_qat for training"
                    .into(),
            ));
        }
        Ok(())
    })
}

/// Fuses for inference: batch norm is folded into the preceding conv/linear weights and bias
/// (`W' = W·γ/√(var+ε)`, `b' = (b−μ)·γ/√(var+ε) + β`) and ReLU becomes part of the layer.
/// Like PyTorch, only allowed in eval mode (`model.valid()`): a training-mode batch norm still
/// has statistics to learn. On error the model is unchanged.
pub fn fuse_modules<M: Quantizable>(model: &mut M) -> Result<()> {
    check_fusable(model, true)?;
    model.visit_layers(&mut |_, layer| {
        match layer {
            QuantLayer::Conv(c) => {
                if let Some(bn) = c.bn.take() {
                    c.conv = fold_bn_into_conv(&c.conv, &bn);
                }
                c.fusion = Fusion::Eval;
            }
            QuantLayer::Linear(l) => {
                if let Some(bn) = l.bn.take() {
                    l.linear = fold_bn_into_linear(&l.linear, &bn);
                }
                l.fusion = Fusion::Eval;
            }
            QuantLayer::Quant(_) | QuantLayer::Functional(_) => {}
        }
        Ok(())
    })
}

/// Fuses for quantization-aware training: batch norm stays and keeps learning its statistics;
/// after `prepare_qat` it is folded into the weight inside the forward
/// (`torch.ao.nn.intrinsic.qat.ConvBn2d`, ...). On error the model is unchanged.
pub fn fuse_modules_qat<M: Quantizable>(model: &mut M) -> Result<()> {
    check_fusable(model, false)?;
    model.visit_layers(&mut |_, layer| {
        match layer {
            QuantLayer::Conv(c) => c.fusion = Fusion::Qat,
            QuantLayer::Linear(l) => l.fusion = Fusion::Qat,
            QuantLayer::Quant(_) | QuantLayer::Functional(_) => {}
        }
        Ok(())
    })
}
