//! Quantized concatenation with requantization to the output's qparams (`FloatFunctional.cat`
//! after convert = `QFunctional.cat`, i.e. `quantized::cat(xs, dim, scale, zero_point)`,
//! `aten/src/ATen/native/quantized/cpu/qconcat.cpp`). ShuffleNetV2 joins its two branches
//! with it. Each output byte depends on one input byte and that input's qparams, so a call
//! builds a 256-entry table per input and looks every byte up ([`ByteKernels::lookup`]).
//!
//! Both engines run the same native code, which takes one of two paths:
//! - **NHWC fast path** (`qcat_nhwc_kernel`: `dim == 1` and every input 4-D and channels-last,
//!   as quantized convolutions return them). Per pixel and input, the first `⌊C_i / 8⌋ · 8`
//!   channels run vectorized, the rest scalar:
//!   ```text
//!   vector:  x = fma(s_i, (float)q, s_i · −(float)z_i)    // Vectorized<quint8>::dequantize
//!   scalar:  x = s_i · (float)(q − z_i)                    // dequantize_val
//!   both:    y = clamp(nearbyint(x · (1.0f / s_y)) + z_y, 0, 255)
//!   ```
//! - **Otherwise** (NCHW inputs, another `dim`): each input is dequantized
//!   (`s_i · (float)(q − z_i)`), the floats are concatenated and quantized to `(s_y, z_y)`.
//!
//! Found by experiment against PyTorch 2.5.1 (`scripts/gen_functional_int8_fixtures.py`): on
//! this AVX-512 machine PyTorch's quantized kernels step by 8 floats (its AVX2 code).

use std::borrow::Cow;

use super::buffer::Buffer;
use super::kernels::bytewise::ByteKernels;
use super::tensor::{MemoryFormat, QParamsPt, QTensor, quantize_val};
use crate::{Error, Result};

/// Channels per vector step of PyTorch's NHWC cat (`Vectorized<float>::size()` on AVX2).
const NHWC_STEP: usize = 8;

/// The output byte for each input byte of one input: through the vectorized dequantize
/// (`fma`) and through the scalar one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatTables {
    /// The NHWC fast path's vector channels.
    pub vector: [u8; 256],
    /// Scalar channels, and every element off the fast path.
    pub scalar: [u8; 256],
}

impl CatTables {
    /// The tables from `input` qparams to `output` ones.
    pub fn new(input: QParamsPt, output: QParamsPt) -> Self {
        let (s, z) = (input.scale, input.zero_point);
        let inv = 1.0f32 / output.scale;
        let zo = output.zero_point;
        let premul = s * -(z as f32);
        CatTables {
            vector: std::array::from_fn(|q| {
                quantize_val(s.mul_add(q as f32, premul), inv, zo, 0, 255) as u8
            }),
            scalar: std::array::from_fn(|q| {
                quantize_val(s * (q as i32 - z) as f32, inv, zo, 0, 255) as u8
            }),
        }
    }
}

/// A quantized concatenation with its output qparams (`QFunctional.scale` / `zero_point`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Cat {
    output: QParamsPt,
}

impl Int8Cat {
    /// A concatenation producing `output` qparams.
    pub fn new(output: QParamsPt) -> Self {
        Int8Cat { output }
    }

    /// Output scale and zero-point.
    pub fn output_qparams(&self) -> QParamsPt {
        self.output
    }

    /// Concatenates on the fastest kernels.
    pub fn forward(&self, inputs: &[&QTensor], dim: usize, channels_last: bool) -> Result<QTensor> {
        self.forward_with(ByteKernels::detect(), inputs, dim, channels_last)
    }

    /// Concatenates `inputs` along `dim` with the given kernels; `channels_last` says PyTorch
    /// would hold every input channels-last (the fast path when `dim` is 1 on 4-D inputs,
    /// whose output is channels-last; NCHW otherwise). The inputs must have the same rank and
    /// equal sizes outside `dim`. The output is stored channels-last on the fast path and when
    /// every input is (a 4-D `dim` 1 cat), NCHW otherwise; either holds PyTorch's values.
    pub fn forward_with(
        &self,
        kernels: ByteKernels,
        inputs: &[&QTensor],
        dim: usize,
        channels_last: bool,
    ) -> Result<QTensor> {
        let shape = cat_shape(inputs, dim)?;
        let fast = channels_last && dim == 1 && shape.len() == 4;
        // The values follow PyTorch's path (`fast`); the storage need not: channel runs per
        // pixel when every input already holds them (no transposes on either side).
        let per_pixel = dim == 1
            && shape.len() == 4
            && (fast
                || inputs
                    .iter()
                    .all(|x| x.format() == MemoryFormat::ChannelsLast));
        let format = match per_pixel {
            true => MemoryFormat::ChannelsLast,
            false => MemoryFormat::Contiguous,
        };
        // Row-major over `format`: each input is `outer` runs of `run_i` bytes; an output row
        // holds every input's run in turn. Channels-last runs are a pixel's channels.
        let (outer, inner) = match per_pixel {
            true => (shape[0] * shape[2] * shape[3], 1),
            false => (
                shape[..dim].iter().product::<usize>(),
                shape[dim + 1..].iter().product::<usize>(),
            ),
        };
        let row = shape[dim] * inner;
        let mut out = Buffer::new(outer * row);
        let mut offset = 0;
        for x in inputs {
            let run = x.shape()[dim] * inner;
            let x = x.to_format(format);
            let tables = CatTables::new(x.qparams(), self.output);
            let split = match fast {
                true => run / NHWC_STEP * NHWC_STEP,
                false => 0,
            };
            // Requantize the whole input at once (through each table its runs use), then
            // place its runs: one long lookup instead of one per pixel.
            let vector = (split > 0).then(|| requantize(kernels, &tables.vector, x.data()));
            let scalar = match &vector {
                Some(v) if tables.scalar == tables.vector => Cow::Borrowed(&v[..]),
                // Every channel is a vector one: the scalar bytes are never read.
                _ if split == run => Cow::Borrowed(x.data()),
                _ => requantize(kernels, &tables.scalar, x.data()),
            };
            for o in 0..outer {
                let dst = &mut out[o * row + offset..][..run];
                let src = o * run;
                if let Some(v) = &vector {
                    dst[..split].copy_from_slice(&v[src..][..split]);
                }
                dst[split..].copy_from_slice(&scalar[src + split..][..run - split]);
            }
            offset += run;
        }
        QTensor::from_buffer(out, &shape, self.output, format)
    }
}

/// `table[q]` for every byte of `data`; `data` itself where the table is the identity (equal
/// input and output qparams).
fn requantize<'a>(kernels: ByteKernels, table: &[u8; 256], data: &'a [u8]) -> Cow<'a, [u8]> {
    if table.iter().enumerate().all(|(i, &v)| v as usize == i) {
        return Cow::Borrowed(data);
    }
    let mut out = vec![0; data.len()];
    kernels.lookup(table, data, &mut out);
    Cow::Owned(out)
}

/// The output shape of concatenating `inputs` along `dim`, or an error for no inputs, a
/// `dim` past the rank, unequal ranks or unequal sizes outside `dim`.
pub fn cat_shape(inputs: &[&QTensor], dim: usize) -> Result<Vec<usize>> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::Shape("quantized cat: no tensors to concatenate".into()))?;
    let rank = first.shape().len();
    if dim >= rank {
        return Err(Error::Shape(format!(
            "quantized cat: dim {dim} is out of range for rank-{rank} tensors"
        )));
    }
    let mut shape = first.shape().to_vec();
    shape[dim] = 0;
    for x in inputs {
        let s = x.shape();
        let same = s.len() == rank && (0..rank).all(|d| d == dim || s[d] == shape[d]);
        if !same {
            return Err(Error::Shape(format!(
                "quantized cat along dim {dim}: shapes {:?} and {s:?} differ outside it",
                first.shape()
            )));
        }
        shape[dim] = shape[dim].checked_add(s[dim]).ok_or_else(|| {
            Error::Shape(format!("quantized cat: the size along dim {dim} overflows"))
        })?;
    }
    crate::limits::check_fits(crate::limits::product(shape.iter().map(|&d| d as u64)))
        .map_err(|e| Error::Shape(format!("quantized cat: output shape {shape:?}: {e}")))?;
    Ok(shape)
}
