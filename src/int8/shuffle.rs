//! Channel shuffle on quint8 tensors: ShuffleNetV2's `channel_shuffle(x, groups)` (torchvision,
//! `x.view(n, g, c / g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)`), pure data
//! movement: output channel `j · g + i` is input channel `i · (c / g) + j`. The output keeps the
//! input's qparams and is NCHW-contiguous, as `.contiguous()` makes it in PyTorch. Whole planes
//! move, so the copy is `memcpy` on every CPU (no vector variant to hold to it).

use super::buffer::Buffer;
use super::tensor::{MemoryFormat, QTensor};
use crate::{Error, Result};

/// The input channel that output channel `k` of a shuffle of `channels` in `groups` reads.
#[inline]
pub fn shuffle_source(k: usize, channels: usize, groups: usize) -> usize {
    let per_group = channels / groups;
    (k % groups) * per_group + k / groups
}

/// `channel_shuffle(x, groups)` of an `[N, C, H, W]` tensor; an error for another rank, zero
/// groups, or `C` not divisible by `groups` (where PyTorch's `view` fails).
pub fn channel_shuffle(x: &QTensor, groups: usize) -> Result<QTensor> {
    let &[_, c, h, w] = x.shape() else {
        return Err(Error::Shape(format!(
            "channel shuffle needs an [N, C, H, W] tensor, got shape {:?}",
            x.shape()
        )));
    };
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::Shape(format!(
            "channel shuffle: {c} channels do not split into {groups} groups"
        )));
    }
    let x = x.to_contiguous();
    let plane = h * w;
    let mut out = Buffer::new(x.data().len());
    if plane > 0 && c > 0 {
        for (src, dst) in x
            .data()
            .chunks_exact(c * plane)
            .zip(out.chunks_exact_mut(c * plane))
        {
            for (k, dst) in dst.chunks_exact_mut(plane).enumerate() {
                let from = shuffle_source(k, c, groups);
                dst.copy_from_slice(&src[from * plane..][..plane]);
            }
        }
    }
    QTensor::from_buffer(out, x.shape(), x.qparams(), MemoryFormat::Contiguous)
}
