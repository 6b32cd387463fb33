//! Trainable fused modules for QAT (`torch.ao.nn.intrinsic.qat`).

pub mod conv_bn;

pub use conv_bn::QatConv2d;
