//! A channel slice of a quint8 tensor: `x.narrow(1, start, len)`, one half of ShuffleNetV2's
//! `x.chunk(2, dim=1)`. Pure data movement: the slice keeps the input's scale and zero-point,
//! as PyTorch's view does. The result is stored in the input's memory format; what memory
//! format PyTorch would see (which decides the path of a quantized `cat` the slice goes into) is
//! the caller's to track.

use super::buffer::Buffer;
use super::tensor::{MemoryFormat, QTensor};
use crate::{Error, Result};

/// Channels `start .. start + len` of an `[N, C, H, W]` tensor; an error for another rank or a
/// range past `C` (where PyTorch's `narrow` raises).
pub fn narrow_channels(x: &QTensor, start: usize, len: usize) -> Result<QTensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::Shape(format!(
            "a channel slice needs an [N, C, H, W] tensor, got shape {:?}",
            x.shape()
        )));
    };
    if start.checked_add(len).is_none_or(|end| end > c) {
        return Err(Error::Shape(format!(
            "channels {start}..{start}+{len} are outside a tensor of {c} channels"
        )));
    }
    let plane = h * w;
    let mut out = Buffer::new(n * len * plane);
    if plane > 0 && len > 0 {
        let images = x
            .data()
            .chunks_exact(c * plane)
            .zip(out.chunks_exact_mut(len * plane));
        for (src, dst) in images {
            match x.format() {
                MemoryFormat::Contiguous => {
                    dst.copy_from_slice(&src[start * plane..][..len * plane])
                }
                MemoryFormat::ChannelsLast => {
                    for (src, dst) in src.chunks_exact(c).zip(dst.chunks_exact_mut(len)) {
                        dst.copy_from_slice(&src[start..][..len]);
                    }
                }
            }
        }
    }
    QTensor::from_buffer(out, &[n, len, h, w], x.qparams(), x.format())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::QParamsPt;

    #[test]
    fn a_slice_keeps_its_channels_and_qparams() {
        let q = QParamsPt::new(0.5, 3).unwrap();
        let data: Vec<u8> = (0..16).map(|v| v as u8).collect();
        let x = QTensor::from_raw(data, &[2, 4, 2, 1], q).unwrap();
        let y = narrow_channels(&x.to_format(MemoryFormat::ChannelsLast), 1, 2).unwrap();
        assert_eq!(y.shape(), &[2, 2, 2, 1]);
        assert_eq!(y.qparams(), q);
        assert_eq!(y.to_contiguous().data(), &[2, 3, 4, 5, 10, 11, 12, 13]);
        assert!(narrow_channels(&x, 3, 2).is_err());
        assert!(narrow_channels(&x, usize::MAX, 2).is_err());
    }
}
