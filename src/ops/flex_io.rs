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
    match t.as_slice::<f32>() {
        Some(s) => s.into(),
        None => gathered(t).into(),
    }
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
    tensor(gathered(&t), t.layout().shape().clone())
}

/// `n` zeros, written by the pool (an output buffer the kernels then fill).
pub(super) fn zeros(n: usize) -> Vec<f32> {
    filled_by_pool(n, |_, chunk| chunk.fill(MaybeUninit::new(0.0)))
}

/// A row-major copy of `t`'s values, made by the pool whatever the layout.
fn gathered(t: &FlexTensor) -> Vec<f32> {
    let layout = t.layout();
    let (shape, strides) = collapse(layout.shape(), layout.strides());
    if strides.iter().any(|&s| s < 0) {
        // Flipped views never reach the ops; keep Burn's general copy for them.
        return t
            .to_contiguous()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
    }
    let source = &t.storage::<f32>()[layout.start_offset()..];
    // Rows along the last (collapsed) axis; a task may start or end inside a row.
    let (row_len, step) = (shape[shape.len() - 1], strides[strides.len() - 1] as usize);
    let outer = &shape[..shape.len() - 1];
    let row_start = |row: usize| {
        let (mut r, mut start) = (row, 0usize);
        for (&d, &s) in outer.iter().zip(&strides).rev() {
            start += (r % d) * s as usize;
            r /= d;
        }
        start
    };
    filled_by_pool(layout.num_elements(), |first, mut chunk| {
        let mut p = first;
        while !chunk.is_empty() {
            let (row, col) = (p / row_len, p % row_len);
            let (part, rest) = chunk.split_at_mut((row_len - col).min(chunk.len()));
            let start = row_start(row) + col * step;
            for (j, o) in part.iter_mut().enumerate() {
                o.write(source[start + j * step]);
            }
            p += part.len();
            chunk = rest;
        }
    })
}

/// Drops size-1 axes and merges neighbours that are contiguous with each other, so a
/// `swap_dims(0, 1)` view of `[C, N, H, W]` becomes `[N, C, H·W]` with rows of `H·W` values (a
/// contiguous tensor becomes one row). Never empty.
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
    if dims.is_empty() {
        (dims, steps) = (vec![1], vec![1]);
    }
    (dims, steps)
}

/// A vector of `n` values written by the pool: `fill(first, chunk)` must write every slot of
/// `chunk`, which holds positions `first..first + chunk.len()`.
fn filled_by_pool(n: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(TASK_VALUES)
        .enumerate()
        .for_each(|(task, chunk)| fill(task * TASK_VALUES, chunk));
    // SAFETY: the chunks cover the first `n` slots and `fill` writes every slot of its chunk.
    unsafe { out.set_len(n) };
    out
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
    /// 1×1 maps, a permutation, a narrowed slice, rows longer than a task) gathers to what
    /// flex's own copy gives.
    #[test]
    fn strided_views_gather_like_flex() {
        let views = [
            base([5, 3, 4, 6]).transpose(0, 1),
            base([7, 300, 1, 1]).transpose(0, 1),
            base([2, 3, 4, 5]).permute(&[3, 1, 0, 2]),
            base([4, 6, 9, 3]).narrow(2, 2, 5),
            // Rows longer than a task: tasks start and end inside rows.
            base([2, 3, 1, 40_000]).transpose(0, 1),
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
