//! The QAT fused convolution: `torch.ao.nn.intrinsic.qat.ConvBn2d` / `ConvBnReLU2d` (and,
//! without batch norm, `ConvReLU2d`).

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::nn::BatchNorm2d;
use crate::nn::batch_norm::per_channel;
use crate::nn::post_process::{ActivationPostProcess, PostProcess};
use crate::quant::FakeQuantize;

/// `conv(x)` with another weight and bias, keeping `conv`'s stride, padding, dilation, groups.
/// (A throw-away `Conv2d` sharing the hyper-parameters: burn-nn keeps its padding arithmetic
/// private.) The tensors keep their autodiff graph.
pub(crate) fn conv_with_weight(
    conv: &Conv2d,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    let with_weight = Conv2d {
        weight: Param::initialized(ParamId::new(), weight),
        bias: bias.map(|b| Param::initialized(ParamId::new(), b)),
        stride: conv.stride,
        kernel_size: conv.kernel_size,
        dilation: conv.dilation,
        groups: conv.groups,
        padding: conv.padding.clone(),
    };
    with_weight.forward(x)
}

/// A convolution trained with fake-quantized weights, optionally followed by batch norm and
/// ReLU, with PyTorch's forward (`_ConvBnNd._forward_approximate`, torch 2.5.1):
///
/// ```text
/// s        = γ / √(running_var + ε)                 (per output channel)
/// w_q      = weight_fake_quant(W · s)
/// y        = conv(x, w_q) / s + b
/// y        = bn(y)          (batch statistics in training, running ones when frozen)
/// y        = relu(y)        (ConvBnReLU2d)
/// out      = activation_post_process(y)
/// ```
///
/// Without batch norm it is `ConvReLU2d` / a QAT `Conv2d`: `out = app(relu(conv(x,
/// weight_fake_quant(W)) + b))`.
#[derive(Module, Debug)]
pub struct QatConv2d {
    /// The convolution; its weight and bias are the trained parameters.
    pub conv: Conv2d,
    /// Batch norm, learning its statistics during QAT (absent for `ConvReLU2d`).
    pub bn: Option<BatchNorm2d>,
    /// Fake-quant applied to the (BN-scaled) weight.
    pub weight_fake_quant: FakeQuantize,
    /// Fake-quant (or observer) of the output.
    pub activation_post_process: ActivationPostProcess,
    /// Whether a ReLU follows.
    pub relu: bool,
}

impl QatConv2d {
    /// The QAT forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let weight = self.conv.weight.val();
        let bias = self.conv.bias.as_ref().map(|b| b.val());
        let y = match &self.bn {
            None => {
                let w_q = self.weight_fake_quant.forward(weight);
                conv_with_weight(&self.conv, x, w_q, bias)
            }
            Some(bn) => {
                let device = weight.device();
                let scale = bn.scale_factor().to_device(&device);
                let w_q = self
                    .weight_fake_quant
                    .forward(weight * scale.clone().reshape([-1, 1, 1, 1]));
                let y = conv_with_weight(&self.conv, x, w_q, None) / per_channel::<4>(scale);
                let y = match bias {
                    Some(b) => y + per_channel::<4>(b),
                    None => y,
                };
                bn.forward(y)
            }
        };
        let y = if self.relu { relu(y) } else { y };
        self.activation_post_process.post_process(y)
    }
}
