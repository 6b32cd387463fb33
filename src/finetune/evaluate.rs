//! What the fine-tuning run measures of a model, any [`ImageClassifier`]: test accuracy and
//! single-image latency, on the float / fake-quant forward or the int8 one. Evaluation never
//! observes: a model's quantization ranges are the same after it.

use std::borrow::Cow;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::{Image, ImageDataset, Transform};
use crate::nn::ImageClassifier;
use crate::quantize::disable_observer;
use crate::{Error, Result};

/// Images and labels as the model's input batch `[N, 3, H, W]` and targets `[N]`.
pub(super) fn batch_tensors(
    images: &[&Image],
    labels: &[usize],
    transform: &Transform,
    device: &Device,
) -> Result<(Tensor<4>, Tensor<1, Int>)> {
    let x = transform.batch(images, device)?;
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let y = Tensor::from_data(TensorData::new(labels, [images.len()]), device);
    Ok((x, y))
}

/// The model as evaluation runs it: a copy with its observers off, so that test images never
/// move a quantization range (which `convert` would then bake in). int8 models have none.
fn eval_model<M: ImageClassifier>(model: &M, int8: bool) -> Cow<'_, M> {
    if int8 {
        return Cow::Borrowed(model);
    }
    let mut model = model.valid();
    disable_observer(&mut model);
    Cow::Owned(model)
}

/// Logits of `x`, from the float / fake-quant forward or (`int8`) the int8 one.
fn logits<M: ImageClassifier>(model: &M, x: Tensor<4>, int8: bool) -> Result<Tensor<2>> {
    if int8 {
        model.forward_int8(x)
    } else {
        Ok(model.forward(x))
    }
}

/// Accuracy on `data`, with the float/fake-quant forward or (`int8`) the int8 one. Evaluation
/// never observes: the model's quantization ranges are the same after it.
pub fn accuracy<M: ImageClassifier>(
    model: &M,
    data: &ImageDataset,
    transform: &Transform,
    int8: bool,
    max_batches: Option<usize>,
    device: &Device,
) -> Result<f64> {
    if max_batches == Some(0) {
        return Err(Error::Config(
            "--max-batches 0: nothing would be evaluated".into(),
        ));
    }
    let model = &*eval_model(model, int8);
    let (mut correct, mut seen) = (0usize, 0usize);
    let chunk = 100;
    let n = data
        .len()
        .min(max_batches.map_or(usize::MAX, |b| b * chunk));
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let images: Vec<&Image> = data.images[start..end].iter().collect();
        let (x, y) = batch_tensors(&images, &data.labels[start..end], transform, device)?;
        let pred = logits(model, x, int8)?.argmax(1).flatten::<1>(0, 1);
        correct += pred.equal(y).int().sum().into_scalar::<i64>() as usize;
        seen += end - start;
    }
    if seen == 0 {
        return Err(Error::Data("the test split is empty".into()));
    }
    Ok(correct as f64 / seen as f64)
}

/// Median single-image latency over the first `images` test images.
pub(super) fn latency_ms<M: ImageClassifier>(
    model: &M,
    data: &ImageDataset,
    transform: &Transform,
    int8: bool,
    images: usize,
    device: &Device,
) -> Result<f64> {
    let model = &*eval_model(model, int8);
    let mut times = Vec::new();
    for i in 0..images.min(data.len()) {
        let (x, _) = batch_tensors(&[&data.images[i]], &data.labels[i..=i], transform, device)?;
        let start = Instant::now();
        let _ = logits(model, x, int8)?.into_data();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(f64::NAN))
}

/// The trained model for evaluation and convert, which run on the CPU whatever the training
/// device. `valid()` first: it gives the copy running statistics of its own, so moving it does
/// not move the training model's (module clones share them).
pub(super) fn on_cpu<M: Module>(model: &M, cpu: &Device) -> M {
    model.valid().to_device(cpu)
}
