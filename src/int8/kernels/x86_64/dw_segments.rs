//! The walk over a channels-last depthwise convolution's output that the AVX2 and AVX-512
//! kernels share: output pixels are contiguous `c`-byte runs, dealt in equal ranges to the
//! threads ([`tasks_for`]); each range runs row segment by row segment, so that a kernel can take
//! a segment group by group and keep a group's weights and requantization at hand along the row.

use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

use super::super::{ConvCall, for_each_block, tasks_for};

/// One row segment of the output: `out.len() / c` pixels of output row `oy` from column `ox0`.
pub(super) struct RowSegment<'a, const K: usize> {
    /// Each kernel row's input row (its first pixel) and pixel step; outside the image the
    /// zero-point row, with step 0.
    pub rows: [(*const u8, usize); K],
    /// The segment's first output column.
    pub ox0: usize,
    /// Its output pixels, `c` bytes each.
    pub out: &'a mut [u8],
}

/// Calls `f` on every row segment of a `K×K` depthwise convolution of the NHWC image `x`
/// (geometry `call`) into the NHWC `out`, on the threads. `zero_row` holds the input's
/// zero-point in every channel. While a segment runs, the input rows the next output row adds
/// to the window are prefetched: a kernel walks each row a vector at a time in steps of `c`, a
/// stride the hardware prefetchers miss.
pub(super) fn for_each_row_segment<const K: usize>(
    call: &ConvCall,
    x: &[u8],
    zero_row: &[u8],
    out: &mut [u8],
    f: impl Fn(RowSegment<'_, K>) + Sync,
) {
    let ConvCall {
        n,
        c,
        h,
        w,
        oh,
        ow,
        stride,
        pad,
        ..
    } = *call;
    let pixels = n * oh * ow;
    let per_task = pixels
        .div_ceil(tasks_for(pixels * c * K * K, 1 << 20))
        .max(1);
    for_each_block(out, per_task * c, |task, chunk| {
        let first = task * per_task;
        let mut done = 0;
        while done < chunk.len() / c {
            let p = first + done;
            let (b, oy, ox0) = (p / (oh * ow), p / ow % oh, p % ow);
            let count = (ow - ox0).min(chunk.len() / c - done);
            let image = &x[b * h * w * c..][..h * w * c];
            let rows: [(*const u8, usize); K] = std::array::from_fn(|ky| {
                let iy = (oy * stride + ky).wrapping_sub(pad);
                if iy < h {
                    (image[iy * w * c..].as_ptr(), c)
                } else {
                    (zero_row.as_ptr(), 0)
                }
            });
            for ky in K.saturating_sub(stride)..K {
                let iy = ((oy + 1) * stride + ky).wrapping_sub(pad);
                if iy < h {
                    let first = ((ox0 * stride).saturating_sub(pad)).min(w - 1);
                    let last = ((ox0 + count - 1) * stride + K - 1)
                        .saturating_sub(pad)
                        .min(w - 1);
                    let row = &image[iy * w * c..][first * c..(last + 1) * c];
                    for line in row.chunks(64) {
                        // SAFETY: SSE is part of x86-64; a prefetch reads nothing it could fault on.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8) };
                    }
                }
            }
            f(RowSegment {
                rows,
                ox0,
                out: &mut chunk[done * c..][..count * c],
            });
            done += count;
        }
    });
}
