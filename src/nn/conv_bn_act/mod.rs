//! `ConvBnAct`: convolution, optional batch norm, optional ReLU/ReLU6 — one layer through every
//! stage of the eager workflow. Float it is torchvision's `Conv2dNormActivation`; fused for
//! inference it is `torch.ao.nn.intrinsic.ConvReLU2d` with BN folded in; fused for QAT and
//! prepared it is `torch.ao.nn.intrinsic.qat.ConvBn2d` / `ConvBnReLU2d` / `ConvReLU2d`.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use std::sync::Arc;

mod inference;
mod stages;

use super::activation::Activation;
use super::batch::Batch;
use super::batch_norm::{BatchNorm2d, BatchNorm2dConfig, per_channel};
use super::post_process::ActivationPostProcess;
use super::stage::Fusion;
use super::weighted::dequantized_weights;
use crate::int8::Int8Conv2d;
use crate::ops::depthwise_conv2d;
use crate::quant::FakeQuantize;

/// Configuration of a [`ConvBnAct`] layer.
#[derive(Config, Debug)]
pub struct ConvBnActConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size; padding is `(kernel_size - 1) / 2`, as torchvision's.
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Convolution groups (`in_channels` for a depthwise convolution).
    #[config(default = 1)]
    pub groups: usize,
    /// Whether a batch norm follows the convolution.
    #[config(default = true)]
    pub batch_norm: bool,
    /// Whether the convolution has a bias (torchvision: only without batch norm).
    #[config(default = false)]
    pub bias: bool,
    /// The batch norm's `eps` (PyTorch's default 1e-5; MobileNetV3: 1e-3).
    #[config(default = 1e-5)]
    pub bn_eps: f64,
    /// The batch norm's `momentum` (PyTorch's default 0.1; MobileNetV3: 0.01).
    #[config(default = 0.1)]
    pub bn_momentum: f64,
    /// The activation after the (normalised) convolution.
    #[config(default = "Activation::Relu6")]
    pub activation: Activation,
    /// Weight initialisation; `None` is torchvision's Kaiming-normal fan-out (MobileNetV2,
    /// ResNet). ShuffleNetV2 keeps PyTorch's default, `kaiming_uniform_(a=√5)`.
    #[config(default = "None")]
    pub initializer: Option<Initializer>,
}

/// Convolution → batch norm → activation → activation post-process, by stage:
///
/// - float / fused-for-inference: `app(act(bn(conv(x, W) + b)))` (BN absent once folded);
/// - fused for QAT (`_ConvBnNd._forward_approximate`, torch 2.5.1), with
///   `s = γ / √(running_var + ε)`:
///   `app(act(bn(conv(x, weight_fake_quant(W · s)) / s + b)))`, BN on batch statistics while
///   training and on running statistics once frozen;
/// - prepared without BN (`ConvReLU2d`, QAT `Conv2d`): `app(act(conv(x, weight_fake_quant(W)) + b))`.
///
/// Record names follow PyTorch's fused modules: `conv.weight`, `bn.running_var`,
/// `weight_fake_quant.scale`, `activation_post_process.…`.
#[derive(Module, Debug)]
pub struct ConvBnAct {
    /// The convolution; its weight and bias are trained.
    pub conv: Conv2d,
    /// Batch norm (absent when configured without, or folded by `fuse_modules`).
    pub bn: Option<BatchNorm2d>,
    /// Weight fake-quant, added by `prepare_qat`.
    pub weight_fake_quant: Option<FakeQuantize>,
    /// Output observer / fake-quant, set by `prepare` / `prepare_qat`.
    pub activation_post_process: ActivationPostProcess,
    /// The activation.
    #[module(skip)]
    pub activation: Activation,
    /// How far fusion went.
    #[module(skip)]
    pub fusion: Fusion,
    /// The int8 convolution `convert` made (`torch.ao.nn.quantized.Conv2d` / `ConvReLU2d`).
    #[module(skip)]
    pub int8: Option<Arc<Int8Conv2d>>,
}

impl ConvBnActConfig {
    /// Builds the layer with torchvision's initialisation (Kaiming-normal fan-out weights unless
    /// [`initializer`](Self::initializer) says otherwise, zero bias, unit BN scale).
    pub fn init(&self, device: &Device) -> ConvBnAct {
        let padding = (self.kernel_size - 1) / 2;
        let conv = Conv2dConfig::new(
            [self.in_channels, self.out_channels],
            [self.kernel_size, self.kernel_size],
        )
        .with_stride([self.stride, self.stride])
        .with_groups(self.groups)
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(self.bias)
        .with_initializer(
            self.initializer
                .clone()
                .unwrap_or_else(kaiming_normal_fan_out),
        )
        .init(device);
        let conv = Conv2d {
            bias: conv.bias.map(|b| Param::from_tensor(b.val().zeros_like())),
            ..conv
        };
        ConvBnAct {
            conv,
            bn: self.batch_norm.then(|| {
                BatchNorm2dConfig::new(self.out_channels)
                    .with_eps(self.bn_eps)
                    .with_momentum(self.bn_momentum)
                    .init(device)
            }),
            weight_fake_quant: None,
            activation_post_process: ActivationPostProcess::default(),
            activation: self.activation,
            fusion: Fusion::None,
            int8: None,
        }
    }
}

/// `nn.init.kaiming_normal_(w, mode="fan_out")`, torchvision's convolution initialisation.
pub(crate) fn kaiming_normal_fan_out() -> Initializer {
    Initializer::KaimingNormal {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}

/// `conv(x)` with another weight and bias, keeping `conv`'s stride, padding, dilation, groups.
/// On autodiff devices, depthwise convolutions with explicit padding go through
/// [`crate::ops::depthwise_conv2d`] (fast forward and backward on the CPU) and unpadded 1×1 ones
/// through [`pointwise_conv2d`]; the rest, and inference, through a throw-away `Conv2d` sharing the
/// hyper-parameters (burn-nn keeps its padding arithmetic private). The tensors keep their
/// autodiff graph.
fn conv_with_weight(
    conv: &Conv2d,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    let [out_channels, in_per_group, _, _] = weight.dims();
    let channels = x.dims()[1];
    // The training paths pay off in the backward pass; inference keeps Burn's forward, which is
    // faster on small batches.
    let training = x.device().is_autodiff();
    if let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding
        && training
        && conv.groups == channels
        && out_channels == channels
        && in_per_group == 1
    {
        let options = ConvOptions::new_with_padding(
            conv.stride,
            [(top, bottom), (left, right)],
            conv.dilation,
            conv.groups,
        );
        return with_bias(depthwise_conv2d(x, weight, options), bias);
    }
    // CPU only: on 1×1 maps Burn 0.22's wgpu fusion misreads the product's channels-major
    // views in the backward pass (README, "GPU backends"); Burn's own conv is right there.
    if let [1, 1] = conv.kernel_size
        && training
        && crate::ops::has_cpu_kernels(&x.device())
        && conv.stride == [1, 1]
        && conv.groups == 1
        && matches!(
            conv.padding,
            PaddingConfig2d::Explicit(0, 0, 0, 0) | PaddingConfig2d::Valid
        )
    {
        return pointwise_conv2d(x, weight, bias);
    }
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

/// A 1×1 convolution as one matrix product over the channels-major view, `Y = W · X` with
/// `X: [C_in, N·H·W]`, so that its gradients are single matrix products too (`∂X = Wᵀ · ∂Y`,
/// `∂W = ∂Y · Xᵀ`) instead of Burn's transposed-convolution and im2col paths.
fn pointwise_conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let [n, c_in, h, w] = x.dims();
    let c_out = weight.dims()[0];
    let x = x.swap_dims(0, 1).reshape([c_in, n * h * w]);
    let y = weight
        .reshape([c_out, c_in])
        .matmul(x)
        .reshape([c_out, n, h, w])
        .swap_dims(0, 1);
    with_bias(y, bias)
}

/// `y + b` per channel, or `y` without a bias.
fn with_bias(y: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    match bias {
        Some(b) => y + per_channel::<4>(b),
        None => y,
    }
}

impl ConvBnAct {
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight_shape()[0]
    }

    /// The convolution weight's shape `[out, in/groups, kh, kw]`, also once
    /// [`strip_float`](crate::convert::strip_float) freed the float weight.
    pub fn weight_shape(&self) -> [usize; 4] {
        match &self.int8 {
            Some(int8) if self.is_stripped() => {
                let s = int8.weight().shape();
                [s[0], s[1], s[2], s[3]]
            }
            _ => self.conv.weight.dims(),
        }
    }

    /// Whether the layer trains (PyTorch's `module.training`): its weight on an autodiff device
    /// and its batch norm, if any is left, in training mode.
    pub fn is_training(&self) -> bool {
        self.conv.weight.device().is_autodiff() && self.bn.as_ref().is_none_or(|bn| bn.training())
    }

    /// Whether [`strip_float`](crate::convert::strip_float) freed the float weight (an empty
    /// tensor holds its place).
    pub fn is_stripped(&self) -> bool {
        self.conv.weight.dims().contains(&0)
    }

    /// The forward pass of the current stage: [`Self::forward_float`] on float batches, the int8
    /// convolution on the int8 batches of a converted model, its nodes on traced ones.
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        X::apply(self, vec![x])
    }

    /// The float forward pass of the current stage (see the type's docs). Once
    /// [`strip_float`](crate::convert::strip_float) freed the float weights, PyTorch's
    /// reference quantized convolution: `app(act(conv(x, dequantize(W_q)) + b))` with the int8
    /// form's weight and bias (batch norm folded in).
    pub fn forward_float(&self, x: Tensor<4>) -> Tensor<4> {
        if let Some(int8) = self.int8.as_ref().filter(|_| self.is_stripped()) {
            let (weight, bias) = dequantized_weights(int8.weight(), int8.bias(), &x.device());
            return self.conv_bn_act(x, weight, bias, None);
        }
        let weight = self.conv.weight.val();
        let bias = self.conv.bias.as_ref().map(Param::val);
        let y = match (&self.bn, &self.weight_fake_quant) {
            (Some(bn), Some(wfq)) if self.fusion == Fusion::Qat => {
                let s = bn.scale_factor().to_device(&weight.device());
                let w_q = wfq.forward_scaled_rows(weight, s.clone());
                if let Some(options) = inference::fused_options(&self.conv, &x) {
                    // QAT evaluation: the division, batch norm and activation in the epilogue.
                    let (act, app) = (self.activation, &self.activation_post_process);
                    let y = inference::forward(x, w_q, bias, Some(bn), Some(s), act, options);
                    return app.post_process_activation(Activation::Identity, y);
                }
                let y = conv_with_weight(&self.conv, x, w_q, None);
                match bias {
                    // The division goes into batch norm's own pass over the data.
                    None => bn.forward_divided(y, s),
                    Some(b) => bn.forward(with_bias(y / per_channel::<4>(s), Some(b))),
                }
            }
            (bn, wfq) => {
                let weight = match wfq {
                    Some(wfq) => wfq.forward(weight),
                    None => weight,
                };
                return self.conv_bn_act(x, weight, bias, bn.as_ref());
            }
        };
        self.activation_post_process
            .post_process_activation(self.activation, y)
    }

    /// `app(act(bn(conv(x, weight) + bias)))` with the given weight and bias: one fused op where
    /// nothing trains on the CPU ([`inference`]), else the layer's ops one by one.
    fn conv_bn_act(
        &self,
        x: Tensor<4>,
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
        bn: Option<&BatchNorm2d>,
    ) -> Tensor<4> {
        let app = &self.activation_post_process;
        if let Some(options) = inference::fused_options(&self.conv, &x) {
            let y = inference::forward(x, weight, bias, bn, None, self.activation, options);
            // The activation ran in the op; `forward_after_relu(x)` is `forward(relu(x))`.
            return app.post_process_activation(Activation::Identity, y);
        }
        let y = conv_with_weight(&self.conv, x, weight, bias);
        let y = match bn {
            Some(bn) => bn.forward(y),
            None => y,
        };
        app.post_process_activation(self.activation, y)
    }
}
