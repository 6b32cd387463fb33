//! [`ConvBnAct`](super::ConvBnAct)'s float forward where nothing trains (a plain CPU device:
//! PTQ calibration, QAT evaluation after `valid()`, `infer` and `bench` of a float checkpoint):
//! convolution, bias, batch norm on running statistics and ReLU/ReLU6 as one
//! [`conv2d_inference`] op, PyTorch eager's `Conv2d` → `BatchNorm2d` → `ReLU6` in one pass over
//! the output.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

use crate::nn::activation::Activation;
use crate::nn::batch_norm::BatchNorm2d;
use crate::ops::{Epilogue, channel_values, conv2d_inference, has_cpu_kernels};

/// `conv`'s options when `x` takes the fused op: a plain (non-autodiff) flex device, `f32`,
/// explicit or no padding. `None` keeps the layer's composition of ops (training, GPUs).
pub(super) fn fused_options(conv: &Conv2d, x: &Tensor<4>) -> Option<ConvOptions<2>> {
    let device = x.device();
    if device.is_autodiff() || !has_cpu_kernels(&device) || x.dtype() != DType::F32 {
        return None;
    }
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        _ => return None,
    };
    Some(ConvOptions::new_with_padding(
        conv.stride,
        padding,
        conv.dilation,
        conv.groups,
    ))
}

/// `activation(bn(conv2d(x, weight) / divisor + bias))`, `bn` on its running statistics and
/// the per-channel `divisor` (QAT ConvBn's `γ / σ`, which scaled the weight) one where absent.
pub(super) fn forward(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    bn: Option<&BatchNorm2d>,
    divisor: Option<Tensor<1>>,
    activation: Activation,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let channels = weight.dims()[0];
    let epilogue = match bn {
        Some(bn) => bn.inference_epilogue(),
        None => Epilogue::identity(channels),
    };
    let epilogue = match bias {
        Some(b) => epilogue.with_bias_first(&channel_values(b)),
        None => epilogue,
    };
    let epilogue = match divisor {
        Some(s) => epilogue.divided_first(&channel_values(s)),
        None => epilogue,
    };
    let (lo, hi) = activation.bounds();
    conv2d_inference(x, weight, options, epilogue.clamped(lo, hi))
}
