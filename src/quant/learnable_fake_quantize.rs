//! LSQ: fake quantization with trainable scale and zero-point, as PyTorch's
//! `torch.ao.quantization._learnable_fake_quantize._LearnableFakeQuantize` (torch 2.5.1).
//!
//! The forward value is the ordinary fake-quant with `zero_point` rounded half-to-even and
//! clamped (`_fake_quantize_learnable_per_tensor_affine` / `_per_channel_affine`). The gradients
//! are those of `_fake_quantize_learnable_per_{tensor,channel}_affine_backward`
//! (`aten/src/ATen/native/quantized/FakeQuantPer{Tensor,Channel}Affine.cpp` and the CPU kernels
//! in `QuantizedOpKernels.cpp`), with `z` the backward zero-point (`trunc(clamp(zp + 0.5))`
//! per-tensor, `clamp(round(zp))` per-channel) and `xq = nearbyint(z + x / s)`:
//!
//! ```text
//! dX = dY                          if qmin <= xq <= qmax, else 0
//! dS = Σ dY · (x_fq − x) / s · g   in range
//!      Σ dY · (qmin − z) · g       below,   Σ dY · (qmax − z) · g   above
//! dZ = Σ dY · (−s) · g             out of range, 0 in range
//! ```
//!
//! with `g = 1/sqrt(numel · quant_max)` when `use_grad_scaling`, else 1; sums run over all
//! elements (per-tensor) or over all but the channel axis (per-channel). They are composed from
//! differentiable ops (`value + (p·c − (p·c).detach())`), so Burn's autodiff reproduces them and
//! the forward value stays exact.
//!
//! This stand-alone module takes `&mut self` and writes the parameters in place as PyTorch does;
//! the fake-quant that `QConfig::lsq_qat` attaches to layers is a [`super::FakeQuantize`] with a
//! learnable part ([`super::learnable`]), running the same function. This module reads its
//! parameters and the batch back to the host in every forward on every device (it returns an
//! error for a non-finite batch); the layers' form keeps them on the device where the CPU
//! kernels do not run.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::fake_quantize::FakeQuantizeConfig;
use super::learnable::{LearnableQParamsConfig, LsqArgs, grad_factor, lsq_fake_quant, set_param};
use super::observer::{Observer, ObserverConfig, tensor_to_vec};
use crate::{Error, Result};

/// Configuration of a [`LearnableFakeQuantize`].
#[derive(Config, Debug)]
pub struct LearnableFakeQuantizeConfig {
    /// The observer used for static estimates (`observer=...`); its range is replaced by
    /// `quant_min`/`quant_max`.
    pub observer: ObserverConfig,
    /// `quant_min` (default 0).
    #[config(default = 0)]
    pub quant_min: i64,
    /// `quant_max` (default 255).
    #[config(default = 255)]
    pub quant_max: i64,
    /// Initial scale (default 1.0).
    #[config(default = 1.0)]
    pub scale: f64,
    /// Initial zero-point (default 0.0).
    #[config(default = 0.0)]
    pub zero_point: f64,
    /// Scale the scale/zero-point gradients by `1/sqrt(numel · quant_max)`.
    #[config(default = false)]
    pub use_grad_scaling: bool,
}

impl LearnableFakeQuantizeConfig {
    /// The layer form: a [`FakeQuantizeConfig`] with this LSQ as its learnable part (what
    /// [`Quantizer::Learnable`](super::Quantizer::Learnable) attaches). The observer gets
    /// `quant_min`/`quant_max`, as PyTorch passes them on.
    pub fn fake_quantize(&self) -> FakeQuantizeConfig {
        let observer = self
            .observer
            .clone()
            .with_quant_range(Some((self.quant_min, self.quant_max)));
        let learnable = LearnableQParamsConfig::new(self.quant_min, self.quant_max)
            .with_scale(self.scale)
            .with_zero_point(self.zero_point)
            .with_use_grad_scaling(self.use_grad_scaling);
        FakeQuantizeConfig::new(observer).with_learnable(Some(learnable))
    }

    /// Creates the module. `channels` is `channel_len` for per-channel schemes (ignored for
    /// per-tensor ones).
    pub fn init(&self, channels: usize, device: &Device) -> Result<LearnableFakeQuantize> {
        if self.quant_min >= self.quant_max {
            return Err(Error::Config(
                "quant_min must be strictly less than quant_max".into(),
            ));
        }
        let observer_cfg = self
            .observer
            .clone()
            .with_quant_range(Some((self.quant_min, self.quant_max)));
        let observer = observer_cfg.init(channels, device)?;
        let n = if self.observer.qscheme.is_per_channel() {
            channels
        } else {
            1
        };
        let param = |v: f64| {
            Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(vec![v as f32; n], [n]),
                device,
            ))
        };
        Ok(LearnableFakeQuantize {
            activation_post_process: observer,
            scale: param(self.scale),
            zero_point: param(self.zero_point),
            quant_min: self.quant_min,
            quant_max: self.quant_max,
            use_grad_scaling: self.use_grad_scaling,
            static_enabled: true,
            fake_quant_enabled: true,
            eps: f32::EPSILON,
        })
    }
}

/// LSQ fake-quant module; see the [module docs](self).
#[derive(Module, Debug)]
pub struct LearnableFakeQuantize {
    /// Observer for static estimates.
    pub activation_post_process: Observer,
    /// Trainable scale(s).
    pub scale: Param<Tensor<1>>,
    /// Trainable zero-point(s) (float).
    pub zero_point: Param<Tensor<1>>,
    quant_min: i64,
    quant_max: i64,
    use_grad_scaling: bool,
    static_enabled: bool,
    fake_quant_enabled: bool,
    eps: f32,
}

impl LearnableFakeQuantize {
    /// Learn scale/zero-point, stop static estimates (`enable_param_learning`).
    pub fn enable_param_learning(&mut self) {
        self.toggle_qparam_learning(true);
        self.fake_quant_enabled = true;
        self.static_enabled = false;
    }

    /// Static estimates from the observer, no learning (`enable_static_estimate`).
    pub fn enable_static_estimate(&mut self) {
        self.toggle_qparam_learning(false);
        self.fake_quant_enabled = true;
        self.static_enabled = true;
    }

    /// Observe only; the forward pass is the identity (`enable_static_observation`).
    pub fn enable_static_observation(&mut self) {
        self.toggle_qparam_learning(false);
        self.fake_quant_enabled = false;
        self.static_enabled = true;
    }

    /// Whether scale and zero-point require gradients (`toggle_qparam_learning`).
    pub fn toggle_qparam_learning(&mut self, enabled: bool) {
        self.scale = self.scale.clone().set_require_grad(enabled);
        self.zero_point = self.zero_point.clone().set_require_grad(enabled);
    }

    /// Turns fake quantization on or off (`toggle_fake_quant`).
    pub fn toggle_fake_quant(&mut self, enabled: bool) {
        self.fake_quant_enabled = enabled;
    }

    /// Turns static observer updates on or off (`toggle_observer_update`).
    pub fn toggle_observer_update(&mut self, enabled: bool) {
        self.static_enabled = enabled;
    }

    /// `(scale, zero_point)` for conversion: scale clamped to eps, zero-point rounded
    /// half-to-even and clamped (`calculate_qparams`).
    pub fn calculate_qparams(&mut self) -> (Vec<f32>, Vec<i64>) {
        self.clamp_scale();
        let scale = tensor_to_vec(self.scale.val());
        let zp = tensor_to_vec(self.zero_point.val())
            .into_iter()
            .map(|z| (z.round_ties_even() as i64).clamp(self.quant_min, self.quant_max))
            .collect();
        (scale, zp)
    }

    fn clamp_scale(&mut self) {
        let eps = self.eps;
        let s: Vec<f32> = tensor_to_vec(self.scale.val())
            .into_iter()
            .map(|v| if v < eps { eps } else { v })
            .collect();
        set_param(&mut self.scale, s);
    }

    /// Forward pass (may update the parameters' values from the observer, as PyTorch does).
    pub fn forward<const D: usize>(&mut self, x: Tensor<D>) -> Result<Tensor<D>> {
        let obs = &self.activation_post_process;
        if self.static_enabled {
            let stats = obs.observe_stats(&x)?.unwrap_or_else(|| obs.stats());
            let qp = obs.qparams_of(&stats)?;
            set_param(&mut self.scale, qp.scale);
            set_param(
                &mut self.zero_point,
                qp.zero_point.iter().map(|&z| z as f32).collect(),
            );
        } else {
            self.clamp_scale();
        }
        if !self.fake_quant_enabled {
            return Ok(x);
        }
        let qscheme = self.activation_post_process.qscheme();
        if qscheme.is_symmetric() {
            let n = tensor_to_vec(self.zero_point.val()).len();
            set_param(&mut self.zero_point, vec![0.0; n]);
        }
        let args = LsqArgs {
            scale: &tensor_to_vec(self.scale.val()),
            zero_point: &tensor_to_vec(self.zero_point.val()),
            axis: qscheme
                .is_per_channel()
                .then_some(self.activation_post_process.ch_axis()),
            quant_min: self.quant_min,
            quant_max: self.quant_max,
            grad_factor: grad_factor(
                self.use_grad_scaling,
                x.shape().num_elements(),
                self.quant_max,
            ),
        };
        lsq_fake_quant(
            x,
            &args,
            Some(self.scale.val()),
            Some(self.zero_point.val()),
        )
    }
}
