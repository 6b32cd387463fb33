//! `FloatFunctional`: tensor operations whose output a quantized model must track, PyTorch's
//! `torch.ao.nn.quantized.FloatFunctional`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::post_process::{ActivationPostProcess, PostProcess};

/// Residual adds, products and concatenations through a module, so that `prepare` can observe
/// and `prepare_qat` can fake-quantize their outputs, and `convert` can give them their own
/// output scale and zero-point. Every method computes the float result, then applies
/// `activation_post_process` (identity until the model is prepared).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::nn::FloatFunctional;
///
/// let device = Device::flex();
/// let skip_add = FloatFunctional::new();
/// let x = Tensor::<4>::ones([1, 2, 3, 3], &device);
/// let y = skip_add.add(x.clone(), x); // a residual connection: `x + conv(x)` in a real model
/// ```
#[derive(Module, Debug)]
pub struct FloatFunctional<P: PostProcess = ActivationPostProcess> {
    /// Applied to every result (PyTorch's attribute name).
    pub activation_post_process: P,
}

impl FloatFunctional {
    /// A float-mode `FloatFunctional` (identity post-process).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Default for FloatFunctional {
    fn default() -> Self {
        Self {
            activation_post_process: ActivationPostProcess::default(),
        }
    }
}

impl<P: PostProcess> FloatFunctional<P> {
    /// A `FloatFunctional` with a custom post-process.
    pub fn with_post_process(post_process: P) -> Self {
        Self {
            activation_post_process: post_process,
        }
    }

    fn post<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.activation_post_process.post_process(x)
    }

    /// `x + y`.
    pub fn add<const D: usize>(&self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        self.post(x + y)
    }

    /// `relu(x + y)` (one quantized op after convert).
    pub fn add_relu<const D: usize>(&self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        self.post(relu(x + y))
    }

    /// `x * y`.
    pub fn mul<const D: usize>(&self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        self.post(x * y)
    }

    /// `x + c`. PyTorch does not observe this one: adding a scalar keeps the scale and shifts
    /// the zero-point, so the post-process is not applied.
    pub fn add_scalar<const D: usize>(&self, x: Tensor<D>, c: f64) -> Tensor<D> {
        x.add_scalar(c)
    }

    /// `x * c`. Not observed, as in PyTorch: the scale is multiplied instead.
    pub fn mul_scalar<const D: usize>(&self, x: Tensor<D>, c: f64) -> Tensor<D> {
        x.mul_scalar(c)
    }

    /// Concatenation along `dim`.
    pub fn cat<const D: usize>(&self, xs: Vec<Tensor<D>>, dim: usize) -> Tensor<D> {
        self.post(Tensor::cat(xs, dim))
    }

    /// Matrix product (batched over leading dimensions).
    pub fn matmul<const D: usize>(&self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        self.post(x.matmul(y))
    }
}
