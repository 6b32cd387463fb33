//! Activation post-processes: what a quantizable layer does to its output, swapped by
//! `prepare` (observer) and `prepare_qat` (fake-quant) without touching the user's forward —
//! PyTorch's `activation_post_process` attribute.

use burn::module::Module;
use burn::nn::Identity;
use burn::tensor::Tensor;

use super::activation::Activation;
use crate::quant::{FakeQuantize, Observer};

/// Something applied to a layer's output. Implement it on your own [`Module`] to plug a custom
/// post-process into [`FloatFunctional`](super::FloatFunctional) or the stubs — PyTorch's
/// official hook for custom operators.
///
/// ```
/// use burn::module::Module;
/// use burn::tensor::Tensor;
/// use burn_qat::nn::{FloatFunctional, PostProcess};
///
/// /// Clips every output to [-1, 1] (a toy "custom operator").
/// #[derive(Module, Debug)]
/// struct Clip;
///
/// impl PostProcess for Clip {
///     fn post_process<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
///         x.clamp(-1.0, 1.0)
///     }
/// }
///
/// let add = FloatFunctional::with_post_process(Clip);
/// let device = burn::tensor::Device::flex();
/// let y = add.add(Tensor::<1>::ones([2], &device), Tensor::<1>::ones([2], &device));
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
/// ```
pub trait PostProcess: Module + Clone {
    /// Applies the post-process to `x`.
    fn post_process<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

/// The standard post-processes, switched by `prepare` / `prepare_qat` / `convert`.
#[derive(Module, Debug)]
pub enum ActivationPostProcess {
    /// Float mode: the output passes unchanged.
    Identity(Identity),
    /// After `prepare` (PTQ): the output's range is recorded.
    Observer(Observer),
    /// After `prepare_qat`: the output is fake-quantized (and observed).
    FakeQuantize(FakeQuantize),
}

impl Default for ActivationPostProcess {
    fn default() -> Self {
        Self::Identity(Identity::new())
    }
}

impl ActivationPostProcess {
    /// The observer or fake-quant, if any (what `convert` reads the output qparams from).
    pub fn fake_quantize(&self) -> Option<&FakeQuantize> {
        match self {
            Self::FakeQuantize(fq) => Some(fq),
            _ => None,
        }
    }

    /// The observer recording this output's range (the fake-quant's own one in QAT).
    pub fn observer(&self) -> Option<&Observer> {
        match self {
            Self::Identity(_) => None,
            Self::Observer(obs) => Some(obs),
            Self::FakeQuantize(fq) => Some(&fq.activation_post_process),
        }
    }

    /// `post_process(activation.forward(x))`: a layer's activation, then this post-process. A
    /// ReLU followed by a per-tensor min/max fake-quant on the CPU runs as one pass each way,
    /// with the same values and gradients.
    pub fn post_process_activation<const D: usize>(
        &self,
        activation: Activation,
        x: Tensor<D>,
    ) -> Tensor<D> {
        match (activation, self) {
            (Activation::Relu, Self::FakeQuantize(fq)) => fq.forward_after_relu(x),
            _ => self.post_process(activation.forward(x)),
        }
    }

    /// Mutable access to the fake-quant (to enable/disable observer or fake-quant).
    pub fn fake_quantize_mut(&mut self) -> Option<&mut FakeQuantize> {
        match self {
            Self::FakeQuantize(fq) => Some(fq),
            _ => None,
        }
    }
}

impl PostProcess for ActivationPostProcess {
    fn post_process<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Identity(_) => x,
            Self::Observer(obs) => obs.forward(x),
            Self::FakeQuantize(fq) => fq.forward(x),
        }
    }
}
