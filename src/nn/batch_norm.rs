//! `BatchNorm2d` with PyTorch's training semantics (`torch.nn.BatchNorm2d`), for QAT parity.
//!
//! Burn's own `BatchNorm` updates the running variance with the *biased* batch variance; PyTorch
//! uses the unbiased one (`n / (n - 1)` correction). Fused QAT modules fold the running
//! statistics into the weights, so the difference compounds: this layer follows PyTorch.

use burn::config::Config;
use burn::module::Flag;
use burn::module::{Module, Param, RunningState};
use burn::tensor::{DType, Device, Tensor};

use crate::ops::{Epilogue, batch_norm_train, channel_values, has_cpu_kernels};
use crate::state::switch::{self, Switch};

/// Configuration of a [`BatchNorm2d`].
#[derive(Config, Debug)]
pub struct BatchNorm2dConfig {
    /// Number of channels `C` of the `[N, C, H, W]` input.
    pub num_features: usize,
    /// Added to the variance before the square root.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Weight of the new batch statistic in the running averages.
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// Batch normalisation over `[N, C, H, W]` (or `[N, C]`), as `torch.nn.BatchNorm2d` /
/// `BatchNorm1d`:
///
/// - training (autodiff device and training flag set): `y = (x − μ_B) / √(σ²_B + ε) · γ + β`
///   with the batch mean μ_B and *biased* batch variance σ²_B, then
///   `running_mean ← (1 − m)·running_mean + m·μ_B` and
///   `running_var ← (1 − m)·running_var + m·σ²_B·n/(n − 1)` (`n` values per channel);
/// - otherwise: the same with the running statistics.
///
/// Parameter names are PyTorch's (`weight`, `bias`, `running_mean`, `running_var`).
///
/// # Frozen statistics
/// [`Self::freeze_stats`] (`freeze_bn_stats`) puts the layer in eval mode for good. Once it has
/// a `freeze_bn` switch ([`Self::track_freeze`]: QAT fusion, `fuse_modules_qat`, gives one to
/// every batch norm it keeps), the freeze is saved with the record (PyTorch's
/// `ConvBn2d.freeze_bn` attribute, which PyTorch does not save) and a loaded model stays frozen.
/// A float model has no such entry, so its records stay PyTorch's and torchvision's.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    /// γ.
    pub weight: Param<Tensor<1>>,
    /// β.
    pub bias: Param<Tensor<1>>,
    /// Running mean.
    pub running_mean: RunningState<Tensor<1>>,
    /// Running (unbiased) variance.
    pub running_var: RunningState<Tensor<1>>,
    /// Training mode flag (`Module::train` / `Module::valid`, PyTorch's `train()`/`eval()`;
    /// not saved).
    pub training: Param<Flag>,
    /// Whether the statistics are frozen, saved ([`Self::track_freeze`]); `None` in float
    /// models.
    pub freeze_bn: Option<Switch>,
    /// ε.
    pub eps: f64,
    /// Momentum `m`.
    pub momentum: f64,
}

impl BatchNorm2dConfig {
    /// Unit γ, zero β, zero running mean, unit running variance (PyTorch's `reset_parameters`).
    pub fn init(&self, device: &Device) -> BatchNorm2d {
        let c = self.num_features;
        BatchNorm2d {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            training: Param::from_bool(true),
            freeze_bn: None,
            eps: self.eps,
            momentum: self.momentum,
        }
    }
}

/// Per-channel mean and biased variance of a `[N, C, ...]` tensor, and the count per channel.
///
/// Reduced one axis at a time (the spatial axes, then the batch), so that each sum runs over a
/// few dozen values: one flat f32 sum over `N·H·W` values (thousands in early layers) loses
/// precision in proportion to its length, and batch norm in training mode amplifies that error
/// layer after layer (PyTorch's reductions are blocked, too).
pub(crate) fn batch_moments<const D: usize>(x: &Tensor<D>) -> (Tensor<1>, Tensor<1>, usize) {
    let dims = x.dims();
    let c = dims[1];
    let n: usize = dims.iter().product::<usize>() / c;
    let mean_over_non_channel = |t: Tensor<D>| -> Tensor<1> {
        let t = (2..D).rev().fold(t, |t, axis| t.mean_dim(axis));
        t.mean_dim(0).reshape([c])
    };
    let mean = mean_over_non_channel(x.clone());
    let var = mean_over_non_channel((x.clone() - per_channel::<D>(mean.clone())).square());
    (mean, var, n)
}

/// Reshapes a `[C]` vector to broadcast over `[N, C, ...]` of rank `D`.
pub(crate) fn per_channel<const D: usize>(v: Tensor<1>) -> Tensor<D> {
    let c = v.dims()[0];
    let mut shape = [1usize; D];
    shape[1] = c;
    v.reshape(shape)
}

impl BatchNorm2d {
    /// Whether this forward uses batch statistics (PyTorch's `self.training`).
    pub fn is_training(x_device: &Device, training: bool) -> bool {
        x_device.is_autodiff() && training
    }

    /// Normalises `x` (`[N, C, ...]`), updating the running statistics in training mode.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_input(x, None)
    }

    /// [`Self::forward`] of `x / divisor` (a per-channel `[C]` divisor): QAT ConvBn's
    /// `bn(conv(x, W·s) / s)`. Training on the CPU, one fused op divides on the fly (no
    /// full-size quotient, no separate division gradient); elsewhere the division is a tensor op.
    pub fn forward_divided<const D: usize>(&self, x: Tensor<D>, divisor: Tensor<1>) -> Tensor<D> {
        self.forward_input(x, Some(divisor))
    }

    fn forward_input<const D: usize>(&self, x: Tensor<D>, divisor: Option<Tensor<1>>) -> Tensor<D> {
        let training = Self::is_training(&x.device(), self.training());
        if training && has_cpu_kernels(&x.device()) && x.dtype() == DType::F32 {
            // One fused op with its own backward pass on the CPU (same formulas).
            let c = x.dims()[1];
            let n = x.shape().num_elements() / c.max(1);
            let divisor = divisor.unwrap_or_else(|| Tensor::ones([c], &x.device()));
            let (gamma, beta) = (self.weight.val(), self.bias.val());
            let (y, mean, var) = batch_norm_train(x, divisor, gamma, beta, self.eps);
            self.update_running_stats(mean, var, n);
            return y;
        }
        let x = match divisor {
            Some(divisor) => x / per_channel::<D>(divisor),
            None => x,
        };
        if training {
            let (mean, var) = self.batch_stats(&x);
            self.normalize(x, mean, var)
        } else {
            let device = x.device();
            let mean = self.running_mean().to_device(&device);
            let var = self.running_var().to_device(&device);
            self.normalize(x, mean, var)
        }
    }

    /// Batch mean and biased variance of `x`, folding them into the running statistics.
    /// Exposed for the fused QAT modules, which normalise a rescaled convolution output.
    pub fn batch_stats<const D: usize>(&self, x: &Tensor<D>) -> (Tensor<1>, Tensor<1>) {
        let (mean, var, n) = batch_moments(x);
        self.update_running_stats(mean.clone().detach(), var.clone().detach(), n);
        (mean, var)
    }

    fn update_running_stats(&self, mean: Tensor<1>, biased_var: Tensor<1>, n: usize) {
        let m = self.momentum;
        let device = mean.device();
        let unbiased = biased_var.mul_scalar(n as f64 / (n.max(2) - 1) as f64);
        let rm = self.running_mean().to_device(&device);
        let rv = self.running_var().to_device(&device);
        self.running_mean
            .update(rm.mul_scalar(1.0 - m).add(mean.mul_scalar(m)).detach());
        self.running_var
            .update(rv.mul_scalar(1.0 - m).add(unbiased.mul_scalar(m)).detach());
    }

    /// `γ / √(running_var + ε)` computed as PyTorch's QAT ConvBn does (a division, not a
    /// reciprocal square root), so that the scaled weight rounds the same way.
    pub fn scale_factor(&self) -> Tensor<1> {
        self.weight.val() / self.running_var().add_scalar(self.eps).sqrt()
    }

    /// The running mean, including this thread's latest update (`RunningState::value` can lag
    /// one update behind).
    pub fn running_mean(&self) -> Tensor<1> {
        self.running_mean.value_sync()
    }

    /// The running variance, including this thread's latest update.
    pub fn running_var(&self) -> Tensor<1> {
        self.running_var.value_sync()
    }

    /// `(x − mean) / √(var + ε) · γ + β` with per-channel `mean` and `var`.
    pub fn normalize<const D: usize>(
        &self,
        x: Tensor<D>,
        mean: Tensor<1>,
        var: Tensor<1>,
    ) -> Tensor<D> {
        let inv_std = var.add_scalar(self.eps).sqrt().recip();
        let scale = inv_std * self.weight.val();
        (x - per_channel(mean)) * per_channel(scale) + per_channel(self.bias.val())
    }

    /// This layer on running statistics as a convolution epilogue, PyTorch's inference form
    /// `y = x · α + (β − μ · α)` with `α = (1 / √(σ² + ε)) · γ` ([`Epilogue::batch_norm`]).
    pub fn inference_epilogue(&self) -> Epilogue {
        Epilogue::batch_norm(
            &channel_values(self.weight.val()),
            &channel_values(self.bias.val()),
            &channel_values(self.running_mean()),
            &channel_values(self.running_var()),
            self.eps,
        )
    }

    /// `γ / √(running_var + ε)`, the per-channel factor BN folding and QAT ConvBn use.
    pub fn running_scale(&self) -> Tensor<1> {
        self.running_var()
            .add_scalar(self.eps)
            .sqrt()
            .recip()
            .mul(self.weight.val())
    }

    /// Whether the layer is in training mode: its own flag on and its statistics not frozen
    /// (the device must also be autodiff).
    pub fn training(&self) -> bool {
        self.training.is_enabled() && !self.freeze_bn.as_ref().is_some_and(switch::is_on)
    }

    /// Gives the layer a saved `freeze_bn` switch holding its current freeze (what QAT fusion
    /// does to the batch norms it keeps), so that [`Self::freeze_stats`] survives a save and
    /// load. Does nothing if it has one.
    pub fn track_freeze(&mut self, device: &Device) {
        if self.freeze_bn.is_none() {
            // The flag as `train()` restores it: frozen, not merely in an eval-mode copy.
            let frozen = !self.training.clone().train().is_enabled();
            self.freeze_bn = Some(switch::switch(frozen, device));
        }
    }

    /// Puts the layer in eval mode: running statistics are used and no longer updated, even
    /// while the rest of the model trains (`torch.ao.nn.intrinsic.qat.freeze_bn_stats`, which
    /// sets `bn.training = False`).
    pub fn freeze_stats(&mut self) {
        self.set_frozen(true);
    }

    /// Back to training mode (`torch.ao.nn.intrinsic.qat.update_bn_stats`).
    pub fn update_stats(&mut self) {
        self.set_frozen(false);
    }

    fn set_frozen(&mut self, frozen: bool) {
        self.training = Param::from_bool(!frozen);
        if let Some(s) = self.freeze_bn.as_mut() {
            switch::set(s, frozen);
        }
    }
}
