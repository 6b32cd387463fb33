//! Channel shuffle on quint8 tensors: ShuffleNetV2's `channel_shuffle(x, groups)` (torchvision,
//! `x.view(n, g, c / g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)`), pure data
//! movement: output channel `j · g + i` is input channel `i · (c / g) + j`. The output keeps the
//! input's qparams and its memory format: PyTorch's `.contiguous()` makes it NCHW, which decides
//! the path of a quantized `cat` it goes into, and that is the caller's to track (as for
//! [`super::narrow`]); the values are the same in either format, and keeping the format spares
//! the next convolution (channels-last) a transpose. NCHW moves whole planes (`memcpy`), NHWC
//! gathers each pixel's channels.

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
    let plane = h * w;
    let mut out = Buffer::new(x.data().len());
    if plane > 0 && c > 0 {
        let images = x
            .data()
            .chunks_exact(c * plane)
            .zip(out.chunks_exact_mut(c * plane));
        for (src, dst) in images {
            match x.format() {
                MemoryFormat::Contiguous => {
                    for (k, dst) in dst.chunks_exact_mut(plane).enumerate() {
                        let from = shuffle_source(k, c, groups);
                        dst.copy_from_slice(&src[from * plane..][..plane]);
                    }
                }
                MemoryFormat::ChannelsLast => {
                    for (src, dst) in src.chunks_exact(c).zip(dst.chunks_exact_mut(c)) {
                        shuffle_pixel(src, dst, groups);
                    }
                }
            }
        }
    }
    QTensor::from_buffer(out, x.shape(), x.qparams(), x.format())
}

/// One pixel's channels shuffled: `dst[j · g + i] = src[i · (c / g) + j]`.
fn shuffle_pixel(src: &[u8], dst: &mut [u8], groups: usize) {
    let per_group = src.len() / groups;
    if groups == 2 {
        // ShuffleNetV2's: the two halves interleaved, which compilers vectorize.
        let (a, b) = src.split_at(per_group);
        for ((pair, &a), &b) in dst.chunks_exact_mut(2).zip(a).zip(b) {
            pair.copy_from_slice(&[a, b]);
        }
        return;
    }
    for (j, run) in dst.chunks_exact_mut(groups).enumerate() {
        for (i, v) in run.iter_mut().enumerate() {
            *v = src[i * per_group + j];
        }
    }
}
