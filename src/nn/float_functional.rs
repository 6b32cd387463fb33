//! `FloatFunctional`: tensor operations whose output a quantized model must track, PyTorch's
//! `torch.ao.nn.quantized.FloatFunctional`.

use burn::module::Module;
use burn::tensor::Tensor;

use super::batch::{Batch, BinaryOp};
use super::post_process::{ActivationPostProcess, PostProcess};
use super::qbatch::QuantizedOutput;

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
    /// The output scale and zero-point of the converted model (`QFunctional`).
    #[module(skip)]
    pub int8: Option<QuantizedOutput>,
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
            int8: None,
        }
    }
}

impl<P: PostProcess> FloatFunctional<P> {
    /// A `FloatFunctional` with a custom post-process.
    pub fn with_post_process(post_process: P) -> Self {
        Self {
            activation_post_process: post_process,
            int8: None,
        }
    }

    /// `x + y`.
    pub fn add<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        X::binary(self, BinaryOp::Add, x, y)
    }

    /// `relu(x + y)` (one quantized op after convert).
    pub fn add_relu<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        X::binary(self, BinaryOp::AddRelu, x, y)
    }

    /// `x * y`.
    pub fn mul<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        X::binary(self, BinaryOp::Mul, x, y)
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
    pub fn cat<X: Batch<D>, const D: usize>(&self, xs: Vec<X>, dim: usize) -> X {
        X::cat(self, xs, dim)
    }

    /// Matrix product (batched over leading dimensions).
    pub fn matmul<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        X::binary(self, BinaryOp::Matmul, x, y)
    }
}
