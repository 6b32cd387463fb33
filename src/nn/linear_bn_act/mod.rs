//! `LinearBnAct`: a linear layer with optional batch norm and ReLU through every stage of the
//! eager workflow (`torch.nn.Linear`; fused `torch.ao.nn.intrinsic.LinearReLU` /
//! `LinearBn1d`; QAT `torch.ao.nn.qat.Linear`, `torch.ao.nn.intrinsic.qat.LinearReLU` /
//! `LinearBn1d`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use std::sync::Arc;

mod stages;

use super::activation::Activation;
use super::batch::Batch;
use super::batch_norm::{BatchNorm2d, BatchNorm2dConfig};
use super::post_process::ActivationPostProcess;
use super::stage::Fusion;
use super::weighted::dequantized_weights;
use crate::int8::Int8Linear;
use crate::quant::FakeQuantize;

/// Configuration of a [`LinearBnAct`] layer.
#[derive(Config, Debug)]
pub struct LinearBnActConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether a 1-d batch norm follows.
    #[config(default = false)]
    pub batch_norm: bool,
    /// The activation.
    #[config(default = "Activation::Identity")]
    pub activation: Activation,
    /// Weight initialisation (torchvision's classifiers: `Normal(0, 0.01)`).
    #[config(default = "Initializer::Normal { mean: 0.0, std: 0.01 }")]
    pub initializer: Initializer,
}

/// Linear → batch norm → activation → activation post-process, by stage. Prepared and fused
/// for QAT with a batch norm it runs `LinearBn1d`'s forward, with `s = γ / √(running_var + ε)`:
/// `app(act(bn((x · weight_fake_quant(W · s)ᵀ) / s + b)))`.
///
/// Burn stores the weight as `[in, out]`; the weight fake-quant sees PyTorch's `[out, in]`
/// layout so that per-channel schemes quantize per output feature (axis 0), as PyTorch does.
#[derive(Module, Debug)]
pub struct LinearBnAct {
    /// The linear layer (weight `[in, out]`).
    pub linear: Linear,
    /// Batch norm over the features (absent when configured without or folded).
    pub bn: Option<BatchNorm2d>,
    /// Weight fake-quant, added by `prepare_qat`.
    pub weight_fake_quant: Option<FakeQuantize>,
    /// Output observer / fake-quant.
    pub activation_post_process: ActivationPostProcess,
    /// The activation.
    #[module(skip)]
    pub activation: Activation,
    /// How far fusion went.
    #[module(skip)]
    pub fusion: Fusion,
    /// The int8 layer `convert` made (`torch.ao.nn.quantized.Linear` / `LinearReLU`).
    #[module(skip)]
    pub int8: Option<Arc<Int8Linear>>,
}

impl LinearBnActConfig {
    /// Builds the layer (zero bias).
    pub fn init(&self, device: &Device) -> LinearBnAct {
        let linear = LinearConfig::new(self.in_features, self.out_features)
            .with_initializer(self.initializer.clone())
            .init(device);
        let linear = Linear {
            bias: linear
                .bias
                .map(|b| Param::from_tensor(b.val().zeros_like())),
            ..linear
        };
        LinearBnAct {
            linear,
            bn: self
                .batch_norm
                .then(|| BatchNorm2dConfig::new(self.out_features).init(device)),
            weight_fake_quant: None,
            activation_post_process: ActivationPostProcess::default(),
            activation: self.activation,
            fusion: Fusion::None,
            int8: None,
        }
    }
}

impl LinearBnAct {
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight_shape()[0]
    }

    /// The weight's shape in PyTorch's `[out, in]` layout (Burn stores `[in, out]`), also
    /// once [`strip_float`](crate::convert::strip_float) freed the float weight.
    pub fn weight_shape(&self) -> [usize; 2] {
        match &self.int8 {
            Some(int8) if self.is_stripped() => [int8.out_features(), int8.in_features()],
            _ => {
                let [inputs, outputs] = self.linear.weight.dims();
                [outputs, inputs]
            }
        }
    }

    /// Whether [`strip_float`](crate::convert::strip_float) freed the float weight (an empty
    /// tensor holds its place).
    pub fn is_stripped(&self) -> bool {
        self.linear.weight.dims().contains(&0)
    }

    /// The weight in PyTorch's `[out, in]` layout, fake-quantized if prepared.
    fn quantized_weight_t(&self, weight_t: Tensor<2>) -> Tensor<2> {
        match &self.weight_fake_quant {
            Some(wfq) => wfq.forward(weight_t),
            None => weight_t,
        }
    }

    /// The forward pass of the current stage: [`Self::forward_float`] on float batches, the int8
    /// layer on the int8 batches of a converted model.
    pub fn forward<X: Batch<2>>(&self, x: X) -> X {
        X::apply(self, vec![x])
    }

    /// The float forward pass of the current stage on `[N, in]`. Once
    /// [`strip_float`](crate::convert::strip_float) freed the float weights, PyTorch's
    /// reference quantized linear layer: `app(act(x · dequantize(W_q)ᵀ + b))` with the int8
    /// form's weight and bias.
    pub fn forward_float(&self, x: Tensor<2>) -> Tensor<2> {
        if let Some(int8) = self.int8.as_ref().filter(|_| self.is_stripped()) {
            let (weight, bias) = dequantized_weights::<2>(int8.weight(), int8.bias(), &x.device());
            let y = x.matmul(weight.transpose());
            let y = match bias {
                Some(b) => y + b.unsqueeze_dim(0),
                None => y,
            };
            return self
                .activation_post_process
                .post_process_activation(self.activation, y);
        }
        let weight_t = self.linear.weight.val().transpose();
        let bias = self.linear.bias.as_ref().map(Param::val);
        let add_bias = |y: Tensor<2>| match &bias {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        };
        let y = match (&self.bn, &self.weight_fake_quant) {
            (Some(bn), Some(wfq)) if self.fusion == Fusion::Qat => {
                let s = bn.scale_factor().to_device(&weight_t.device());
                let w_q = wfq.forward_scaled_rows(weight_t, s.clone());
                let y = x.matmul(w_q.transpose()) / s.unsqueeze_dim(0);
                bn.forward(add_bias(y))
            }
            (bn, _) => {
                let y = add_bias(x.matmul(self.quantized_weight_t(weight_t).transpose()));
                match bn {
                    Some(bn) => bn.forward(y),
                    None => y,
                }
            }
        };
        self.activation_post_process
            .post_process_activation(self.activation, y)
    }
}
