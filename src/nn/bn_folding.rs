//! Folding an eval-mode batch norm into the preceding convolution or linear layer
//! (`torch.nn.utils.fusion.fuse_conv_bn_weights` / `fuse_linear_bn_weights`):
//!
//! `W' = W · γ/√(σ² + ε)` (per output channel), `b' = (b − μ) · γ/√(σ² + ε) + β`,
//! with the running mean μ and variance σ².

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use super::batch_norm::BatchNorm2d;

/// `(W', b')` for a weight whose output channels lie on axis `out_axis`.
fn fold<const D: usize>(
    weight: Tensor<D>,
    bias: Option<Tensor<1>>,
    bn: &BatchNorm2d,
    out_axis: usize,
) -> (Tensor<D>, Tensor<1>) {
    fold_with_scale(weight, bias, bn, bn.running_scale(), out_axis)
}

/// `(W · s, (b − μ) · s + β)` for the per-channel factor `s = γ/√(σ² + ε)` as the caller
/// computes it: PyTorch's fusion (`running_scale`) and its QAT ConvBn (`scale_factor`, which
/// the QAT forward and its ONNX export use) round it differently.
pub fn fold_with_scale<const D: usize>(
    weight: Tensor<D>,
    bias: Option<Tensor<1>>,
    bn: &BatchNorm2d,
    scale: Tensor<1>,
    out_axis: usize,
) -> (Tensor<D>, Tensor<1>) {
    let device = weight.device();
    let scale = scale.to_device(&device);
    let out = scale.dims()[0];
    let mut shape = [1usize; D];
    shape[out_axis] = out;
    let weight = weight * scale.clone().reshape(shape);
    let bias = bias.unwrap_or_else(|| Tensor::zeros([out], &device));
    let mean = bn.running_mean().to_device(&device);
    let bias = (bias - mean) * scale + bn.bias.val();
    (weight, bias)
}

/// A convolution equal to `bn(conv(x))` with `bn` in eval mode; the result always has a bias.
pub fn fold_bn_into_conv(conv: &Conv2d, bn: &BatchNorm2d) -> Conv2d {
    let (weight, bias) = fold(conv.weight.val(), conv.bias.as_ref().map(Param::val), bn, 0);
    Conv2d {
        weight: Param::from_tensor(weight.detach()),
        bias: Some(Param::from_tensor(bias.detach())),
        ..conv.clone()
    }
}

/// A linear layer equal to `bn(linear(x))` with a 1-d `bn` in eval mode (Burn stores linear
/// weights as `[in, out]`, so the output axis is 1).
pub fn fold_bn_into_linear(linear: &Linear, bn: &BatchNorm2d) -> Linear {
    let (weight, bias) = fold(
        linear.weight.val(),
        linear.bias.as_ref().map(Param::val),
        bn,
        1,
    );
    Linear {
        weight: Param::from_tensor(weight.detach()),
        bias: Some(Param::from_tensor(bias.detach())),
    }
}
