//! The activations a quantizable layer can end with.

use burn::config::Config;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// Activation after a convolution or linear layer.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None (a linear bottleneck or a classifier).
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`; replaced by ReLU before quantization ([`crate::quantize::replace_relu`],
    /// torchvision's `_replace_relu`), since int8 fusion patterns only know ReLU.
    Relu6,
}

impl Activation {
    /// `(lo, hi)` with `forward(x) = clamp(x, lo, hi)`: what a fused inference epilogue applies
    /// ([`crate::ops::Epilogue`]).
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Self::Identity => (f32::NEG_INFINITY, f32::INFINITY),
            Self::Relu => (0.0, f32::INFINITY),
            Self::Relu6 => (0.0, 6.0),
        }
    }

    /// Applies the activation.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Identity => x,
            Self::Relu => relu(x),
            Self::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}
