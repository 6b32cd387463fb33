//! [`ImageClassifier`]: a quantizable model from an image batch to class logits, whose one
//! forward runs every stage. It is what the fine-tuning loop ([`crate::finetune::run_with`]),
//! its checkpoints and `resume`, and data-parallel training
//! ([`crate::finetune::data_parallel::fit_data_parallel`]) take: MobileNetV2 is one, and a
//! model of yours is one with a few lines (see `examples/custom_cnn_qat.rs`).

use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;

use super::batch::{Batch, ImageBatch};
use super::qbatch::QBatch;
use super::quantizable::Quantizable;
use crate::Result;

/// A quantizable image classifier: `[N, C, H, W]` images to `[N, classes]` logits, with one
/// forward for every stage, generic over the batch type (float tensors before `convert`,
/// [`QBatch`] after it, [`OnnxBatch`](crate::export::OnnxBatch) when traced for ONNX).
///
/// `ModuleDisplay` and `Display` come with `#[derive(Module)]`; burn-train's `Learner` needs
/// them.
pub trait ImageClassifier:
    Module + ModuleDisplay + Quantizable + Sync + core::fmt::Display + 'static
{
    /// The one forward: `X = Tensor<4>` runs the float, observed or fake-quantized model,
    /// `X = QBatch<4>` the int8 one (and returns a `Result`).
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float;

    /// Refuses a batch shape the model cannot take before the int8 forward runs it (default:
    /// every shape; the float forward's shape errors are Burn's).
    fn check_input_shape(&self, shape: &[usize]) -> Result<()> {
        let _ = shape;
        Ok(())
    }

    /// Logits of the float, observed or fake-quantized model (by stage).
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_as::<Tensor<4>>(x)
    }

    /// Logits of the converted model, from the int8 kernels (on the int8 thread pool).
    fn forward_int8(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        self.check_input_shape(&x.dims())?;
        crate::int8::on_thread_pool(|| self.forward_as::<QBatch<4>>(x))
    }
}
