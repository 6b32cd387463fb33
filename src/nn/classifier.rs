//! [`ImageClassifier`]: a quantizable model from an image batch to class logits, whose one
//! forward runs every stage. It is what the fine-tuning loop ([`crate::finetune::run_with`]),
//! its checkpoints and `resume`, and data-parallel training
//! ([`crate::finetune::data_parallel::fit_data_parallel`]) take: MobileNetV2 is one, and a
//! model of yours is one with a few lines (see `examples/custom_cnn_qat.rs`).

use std::path::Path;

use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;

use super::batch::{Batch, ImageBatch};
use super::qbatch::QBatch;
use super::quantizable::Quantizable;
use crate::Result;
use crate::export::proto::ModelProto;
use crate::export::{ExportKind, OnnxBatch, save_onnx, trace_onnx};

/// A quantizable image classifier: `[N, C, H, W]` images to `[N, classes]` logits, with one
/// forward for every stage, generic over the batch type (float tensors before `convert`,
/// [`QBatch`] after it, [`OnnxBatch`] when traced for ONNX).
///
/// `ModuleDisplay` and `Display` come with `#[derive(Module)]`; burn-train's `Learner` needs
/// them.
pub trait ImageClassifier:
    Module + ModuleDisplay + Quantizable + Sync + core::fmt::Display + 'static
{
    /// The name of the model's ONNX graph (`"mobilenet_v2"`, `"resnet"`, ...).
    const NAME: &'static str = "model";

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

    /// ONNX of this model in `kind`'s form (float, QDQ of a QAT model, or int8 of a converted
    /// one; see [`crate::export::onnx`]), laid out by its own
    /// [`forward_as`](Self::forward_as) on [`OnnxBatch`]es; input `[batch, 3, height, width]`
    /// (`input`, dynamic batch and size), output `logits` `[batch, classes]`.
    fn to_onnx(&self, kind: ExportKind) -> Result<ModelProto>
    where
        Self: Sized,
    {
        trace_onnx(self, kind, Self::NAME, [1, 3, 32, 32], |model, x| {
            model.forward_as::<OnnxBatch<4>>(x)
        })
    }

    /// Writes [`to_onnx`](Self::to_onnx) to `path` (atomic write).
    fn export_onnx(&self, kind: ExportKind, path: &Path) -> Result<()>
    where
        Self: Sized,
    {
        save_onnx(&self.to_onnx(kind)?, path)
    }
}
