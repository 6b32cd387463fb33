//! `f32` data between flex tensors and the kernels' slices.
//!
//! Both directions run on the rayon pool: a serial copy or a serial zero-fill of a full
//! activation leaves the other cores idle, and in a QAT step these passes (a strided 1×1
//! convolution output on its way into batch norm, every op's output buffer) were most of the
//! calling thread's own work.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};
use rayon::prelude::*;

use super::TASK_VALUES;

/// The tensor's `f32` values in row-major order: borrowed when it is contiguous, gathered in
/// parallel otherwise. Callers check the dtype first (an `f32` tensor is all the ops send here).
pub(super) fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    if let Some(s) = t.as_slice::<f32>() {
        return s.into();
    }
    let layout = t.layout();
    let (shape, strides) = collapse(layout.shape(), layout.strides());
    if strides.iter().any(|&s| s < 0) {
        // Flipped views never reach the ops; keep Burn's general copy for them.
        return t
            .to_contiguous()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default()
            .into();
    }
    let source: &[f32] = t.storage();
    gather(
        &source[layout.start_offset()..],
        &shape,
        &strides,
        layout.num_elements(),
    )
    .into()
}

/// Drops size-1 axes and merges neighbours that are contiguous with each other, so a
/// `swap_dims(0, 1)` view of `[C, N, H, W]` becomes `[N, C, H·W]` with rows of `H·W` values.
fn collapse(shape: &Shape, strides: &[isize]) -> (Vec<usize>, Vec<isize>) {
    let (mut dims, mut steps): (Vec<usize>, Vec<isize>) = (Vec::new(), Vec::new());
    for (&d, &s) in shape.iter().zip(strides) {
        if d == 1 {
            continue;
        }
        match (dims.last_mut(), steps.last_mut()) {
            (Some(last_d), Some(last_s)) if *last_s == s * d as isize => {
                *last_d *= d;
                *last_s = s;
            }
            _ => {
                dims.push(d);
                steps.push(s);
            }
        }
    }
    (dims, steps)
}

/// Row-major copy of the strided view (`shape`, `strides` ≥ 0) of `source`: rows along the last
/// axis, whole rows per task.
fn gather(source: &[f32], shape: &[usize], strides: &[isize], n: usize) -> Vec<f32> {
    let (row_len, row_step) = match (shape.last(), strides.last()) {
        (Some(&len), Some(&step)) => (len, step as usize),
        _ => (1, 1),
    };
    let outer = &shape[..shape.len().saturating_sub(1)];
    let rows_per_task = (TASK_VALUES / row_len.max(1)).max(1);
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(rows_per_task * row_len.max(1))
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_mut(row_len.max(1)).enumerate() {
                // The row's start: its outer index, digit by digit against the strides.
                let (mut r, mut start) = (task * rows_per_task + i, 0usize);
                for (&d, &s) in outer.iter().zip(strides).rev() {
                    start += (r % d) * s as usize;
                    r /= d;
                }
                if row_step == 1 {
                    let len = row.len();
                    for (o, &v) in row.iter_mut().zip(&source[start..start + len]) {
                        o.write(v);
                    }
                } else {
                    for (j, o) in row.iter_mut().enumerate() {
                        o.write(source[start + j * row_step]);
                    }
                }
            }
        });
    // SAFETY: the chunks cover `out`'s first `n` slots and every slot of every row was written.
    unsafe { out.set_len(n) };
    out
}

/// `n` zeros, written by the pool (an output buffer the kernels then fill).
pub(super) fn zeros(n: usize) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(TASK_VALUES)
        .for_each(|chunk| chunk.fill(MaybeUninit::new(0.0)));
    // SAFETY: every one of the first `n` slots was written above.
    unsafe { out.set_len(n) };
    out
}

/// `t` itself when it is contiguous, starts its storage and owns it alone (a gradient handed
/// over by autodiff usually does), else a contiguous copy: a buffer an op may overwrite in place.
pub(super) fn owned_contiguous(t: FlexTensor) -> FlexTensor {
    let n = t.layout().num_elements();
    if t.is_unique()
        && t.layout().contiguous_offsets() == Some((0, n))
        && t.storage::<f32>().len() == n
    {
        return t;
    }
    let v = values(&t).into_owned();
    tensor(v, t.layout().shape().clone())
}

/// A contiguous flex tensor of `values` with `shape`.
pub(super) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(shape: [usize; 4]) -> FlexTensor {
        let n = shape.iter().product::<usize>();
        let v = (0..n).map(|v| v as f32 * 0.5 - 7.0).collect();
        tensor(v, shape)
    }

    /// Every view the ops meet (the 1×1 convolution's channels-major output, with and without
    /// 1×1 maps, a permutation, a narrowed slice) gathers to what flex's own copy gives.
    #[test]
    fn strided_views_gather_like_flex() {
        let views = [
            base([5, 3, 4, 6]).transpose(0, 1),
            base([7, 300, 1, 1]).transpose(0, 1),
            base([2, 3, 4, 5]).permute(&[3, 1, 0, 2]),
            base([4, 6, 9, 3]).narrow(2, 2, 5),
        ];
        for view in views {
            assert!(
                view.as_slice::<f32>().is_none(),
                "the view should be strided"
            );
            let want = view
                .to_contiguous()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert_eq!(values(&view).as_ref(), want.as_slice());
        }
    }

    /// An op may overwrite what `owned_contiguous` returns: a shared or strided tensor is
    /// copied first, so no other holder sees the write.
    #[test]
    fn owned_contiguous_never_writes_through_a_shared_or_strided_tensor() {
        let shared = base([2, 3, 4, 5]);
        let view = shared.transpose(0, 1);
        for t in [shared.clone(), view] {
            let want = values(&t).into_owned();
            let mut owned = owned_contiguous(t.clone());
            owned.storage_mut::<f32>().fill(9.0);
            assert_eq!(values(&t).as_ref(), want.as_slice());
        }
        let unique = base([2, 3, 4, 5]);
        let ptr = unique.storage::<f32>().as_ptr();
        assert_eq!(owned_contiguous(unique).storage::<f32>().as_ptr(), ptr);
    }

    #[test]
    fn zeros_are_zero() {
        let z = zeros(3 * TASK_VALUES + 5);
        assert_eq!(z.len(), 3 * TASK_VALUES + 5);
        assert!(z.iter().all(|&v| v == 0.0));
    }
}
