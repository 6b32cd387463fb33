//! The quantized spatial mean `x.mean([2, 3])` of a quint8 `[N, C, H, W]` tensor (ShuffleNetV2's
//! global pooling; `mean_out_quantized_cpu` in `aten/src/ATen/native/quantized/cpu/ReduceOps.cpp`,
//! torch 2.5.1). Output `[N, C]` with the input's scale and zero-point. It is not
//! `adaptive_avg_pool2d(x, 1)` ([`super::adaptive_avg_pool2d_1x1`]): on x86 the two round ties
//! differently (9 of 80 values differ on a 2×2 input). With `K = H·W`:
//!
//! - **qnnpack** (`qnnpack_mean`, any layout): QNNPACK's global average pooling, the same fp32
//!   formula as its average pooling,
//!   `y = clamp(cvtps((float)Σ(q − z) · (s / (s · (float)K))) + z, 0, 255)`.
//! - **x86, NCHW-contiguous input** (`qmean_inner_dim_kernel`): `y = nearbyint((float)Σq / (float)K)`.
//! - **x86, otherwise** (a quantized conv's channels-last output, as in a converted model): the
//!   reference path, `quantize_per_tensor(mean(dequantize(x)), s, z)`: each value dequantized as
//!   `s · (float)(q − z)`, summed in f32 in PyTorch's cascade order over the `K` pixels (row
//!   by row, see [`cascade_sum`]), divided by `(float)K`, and quantized with
//!   `nearbyint(m · (1 / s)) + z`.

use super::engine::Engine;
use super::pool::{PoolInputLayout, PoolParams};
use super::tensor::{QTensor, quantize_val, round_half_even};
use crate::{Error, Result};

/// `x.mean([2, 3])` on a quint8 `[n, c, h, w]` tensor held in `layout`, with `engine`'s
/// arithmetic; an error for another rank or an empty plane.
pub fn spatial_mean(input: &QTensor, engine: Engine, layout: PoolInputLayout) -> Result<QTensor> {
    let &[n, c, h, w] = input.shape() else {
        return Err(Error::Shape(format!(
            "the spatial mean expects an [N, C, H, W] input, got {:?}",
            input.shape()
        )));
    };
    let k = h * w;
    if k == 0 {
        return Err(Error::Shape(format!(
            "the spatial mean of an empty plane ({h}×{w}) is undefined"
        )));
    }
    let qparams = input.qparams();
    let (s, z) = (qparams.scale, qparams.zero_point);
    let x = input.to_contiguous();
    let planes = x.data().chunks_exact(k);
    let data: Vec<u8> = match (engine, layout) {
        (Engine::Qnnpack, _) => {
            let params = PoolParams::Qnnpack {
                size: k,
                scale: s / (s * k as f32),
                zero_point: z,
            };
            planes.map(|p| params.apply(sum(p))).collect()
        }
        (Engine::X86, PoolInputLayout::Contiguous) => planes
            .map(|p| round_half_even(sum(p) as f32 / k as f32).clamp(0.0, 255.0) as u8)
            .collect(),
        (Engine::X86, PoolInputLayout::ChannelsLast) => {
            let inv = 1.0f32 / s;
            planes
                .map(|p| {
                    let total = cascade_sum(p.iter().map(|&q| s * (q as i32 - z) as f32));
                    quantize_val(total / k as f32, inv, z, 0, 255) as u8
                })
                .collect()
        }
    };
    QTensor::from_raw(data, &[n, c], qparams)
}

fn sum(plane: &[u8]) -> i64 {
    plane.iter().map(|&q| q as i64).sum()
}

/// PyTorch's f32 sum of one reduced row (`multi_row_sum` in
/// `aten/src/ATen/native/cpu/SumKernel.cpp`): four accumulator levels; values are added to
/// level 0 in blocks of `2^p` (`p = max(4, ⌈log2 K⌉ / 4)`), and after each block level `j`
/// is carried into level `j + 1` until the count of blocks seen is not a multiple of
/// `2^(p·j)`; the remainder goes to level 0, and the levels are added into level 0 at the end.
/// Below 16 values this is the plain left-to-right sum.
pub fn cascade_sum(values: impl ExactSizeIterator<Item = f32>) -> f32 {
    const LEVELS: usize = 4;
    let size = values.len();
    let ceil_log2 = if size <= 1 {
        0
    } else {
        usize::BITS - (size - 1).leading_zeros()
    } as usize;
    let power = (ceil_log2 / LEVELS).max(4);
    let step = 1usize << power;
    let mask = step - 1;
    let mut acc = [0.0f32; LEVELS];
    let full = size / step * step;
    for (i, v) in values.enumerate() {
        acc[0] += v;
        let seen = i + 1;
        if seen % step == 0 && seen <= full {
            for j in 1..LEVELS {
                acc[j] += acc[j - 1];
                acc[j - 1] = 0.0;
                if seen & (mask << (j * power)) != 0 {
                    break;
                }
            }
        }
    }
    let mut total = acc[0];
    for level in &acc[1..] {
        total += level;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_sum_is_left_to_right_below_sixteen_values() {
        let v: Vec<f32> = (0..15).map(|i| 0.1 * i as f32 + 1e-3).collect();
        let plain = v.iter().fold(0.0f32, |a, &b| a + b);
        assert_eq!(cascade_sum(v.into_iter()).to_bits(), plain.to_bits());
    }

    #[test]
    fn cascade_sum_adds_blocks_of_sixteen_then_the_rest() {
        // 49 values (a 7×7 plane): ((b₁ + b₂) + b₃) then the last value, as PyTorch's levels.
        let v: Vec<f32> = (0..49).map(|i| 0.37 * i as f32 - 3.1).collect();
        let block = |r: std::ops::Range<usize>| v[r].iter().fold(0.0f32, |a, &b| a + b);
        let expected = v[48] + ((block(0..16) + block(16..32)) + block(32..48));
        assert_eq!(cascade_sum(v.iter().copied()).to_bits(), expected.to_bits());
    }
}
