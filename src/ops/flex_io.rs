//! `f32` data between flex tensors and the kernels' slices.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};

/// The tensor's `f32` values in row-major order: borrowed when it is contiguous, copied
/// otherwise. Callers check the dtype first (an `f32` tensor is all the ops send here).
pub(super) fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => s.into(),
        None => t
            .to_contiguous()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default()
            .into(),
    }
}

/// A contiguous flex tensor of `values` with `shape`.
pub(super) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}
