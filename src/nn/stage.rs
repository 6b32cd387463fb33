//! How far a quantizable layer has been fused.

use burn::config::Config;

/// The fusion state of a conv/linear (+ BN) (+ ReLU) layer.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Fusion {
    /// Not fused: separate operations.
    None,
    /// `fuse_modules`: batch norm folded into the weights (inference only).
    Eval,
    /// `fuse_modules_qat`: batch norm kept and trained, folded into the weight inside the QAT
    /// forward (`torch.ao.nn.intrinsic.qat`).
    Qat,
}
