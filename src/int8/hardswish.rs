//! Quantized hardswish (`torch.ao.nn.quantized.Hardswish` → `quantized::hardswish`,
//! `aten/src/ATen/native/quantized/cpu/qhardswish.cpp`), `h(x) = x · min(max(x + 3, 0), 6) / 6`
//! from the input's qparams `(s_x, z_x)` to the output's `(s_y, z_y)`; the output keeps the
//! input's memory format. Each output depends on one input byte, so a call builds its engine's
//! 256-entry table (in f32, as each engine computes) and looks every byte up.
//!
//! # qnnpack (`pytorch_qnnp_create_hardswish_nc_q8`, a table built once per call)
//! ```text
//! x = s_x · (float)(q − z_x)
//! y = lrintf(clamp((1.0f / s_y) · h(x) + (float)z_y, 0, 255))   // z_y added before rounding
//! ```
//!
//! # x86 (`qhardswish_kernel` in `QuantizedOpKernels.cpp`, per element)
//! ```text
//! body:  x = fma(s_x, (float)q, s_x · −(float)z_x)   // Vectorized<quint8>::dequantize
//!        y = clamp(cvtps(h(x) · (float)(1.0 / s_y)) + z_y, 0, 255)
//! tail:  x = s_x · (float)(q − z_x)                    // dequantize_val
//!        y = clamp(nearbyint(h(x) · (1.0f / s_y)) + z_y, 0, 255)
//! ```
//! The tail is the last `numel mod 64` elements in PyTorch's memory order (`cpu_kernel_vec`
//! runs vectors of 2 × 32 quint8 on AVX2; AVX-512 builds run 128). The two differ on a few
//! inputs for about one qparams set in twenty (the fma), so a call takes the memory format
//! PyTorch would hold the input in. PyTorch with several intra-op threads gives each thread's
//! share of a tensor above 32768 elements a tail of its own; this follows one thread.

use super::buffer::Buffer;
use super::engine::Engine;
use super::kernels::bytewise::ByteKernels;
use super::pool::PoolInputLayout;
use super::tensor::{MemoryFormat, QParamsPt, QTensor, quantize_val};
use crate::Result;

/// quint8 elements per vectorized step of PyTorch's AVX2 x86 kernel (`2 · Vectorized::size()`).
const X86_BLOCK: usize = 64;

/// `x · min(max(x + 3, 0), 6) / 6` in f32, in PyTorch's order of operations.
#[inline]
pub fn hardswish_f32(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// The output byte for each input byte of one call of an elementwise activation `f` (hardswish,
/// hardsigmoid): the body's, and for x86 the scalar tail's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationTables {
    /// For every element (qnnpack) or the vectorized body (x86).
    pub body: [u8; 256],
    /// For x86's scalar tail (the body's table on qnnpack).
    pub tail: [u8; 256],
}

/// Hardswish's tables (the name they had before hardsigmoid shared them).
pub type HardswishTables = ActivationTables;

impl ActivationTables {
    /// Hardswish's tables of `engine` from `input` to `output` qparams.
    pub fn new(input: QParamsPt, output: QParamsPt, engine: Engine) -> Self {
        Self::of(hardswish_f32, input, output, engine)
    }

    /// The tables of `f` (in f32), with `engine`'s dequantize and quantize, from `input` to
    /// `output` qparams.
    pub fn of(f: fn(f32) -> f32, input: QParamsPt, output: QParamsPt, engine: Engine) -> Self {
        let (s, z) = (input.scale, input.zero_point);
        let (so, zo) = (output.scale, output.zero_point);
        let table = |f: &dyn Fn(i32) -> u8| std::array::from_fn(|i| f(i as i32));
        match engine {
            Engine::Qnnpack => {
                let inv = 1.0f32 / so;
                let body = table(&|q| {
                    let y = inv * f(s * (q - z) as f32) + zo as f32;
                    y.clamp(0.0, 255.0).round_ties_even() as u8
                });
                ActivationTables { tail: body, body }
            }
            Engine::X86 => {
                let premul = s * -(z as f32);
                let inv_body = (1.0f64 / so as f64) as f32;
                let inv_tail = 1.0f32 / so;
                ActivationTables {
                    body: table(&|q| {
                        let x = s.mul_add(q as f32, premul);
                        quantize_val(f(x), inv_body, zo, 0, 255) as u8
                    }),
                    tail: table(&|q| {
                        let x = s * (q - z) as f32;
                        quantize_val(f(x), inv_tail, zo, 0, 255) as u8
                    }),
                }
            }
        }
    }
}

/// A quantized hardswish with its output qparams (`Hardswish.scale` / `zero_point`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Hardswish {
    output: QParamsPt,
    engine: Engine,
}

impl Int8Hardswish {
    /// A hardswish producing `output` qparams with `engine`'s arithmetic.
    pub fn new(output: QParamsPt, engine: Engine) -> Self {
        Int8Hardswish { output, engine }
    }

    /// Output scale and zero-point.
    pub fn output_qparams(&self) -> QParamsPt {
        self.output
    }

    /// The tables for an input with qparams `input`.
    pub fn tables(&self, input: QParamsPt) -> HardswishTables {
        HardswishTables::new(input, self.output, self.engine)
    }

    /// Hardswish of `input`, which PyTorch would hold in `layout`, on the fastest kernels.
    pub fn forward(&self, input: &QTensor, layout: PoolInputLayout) -> Result<QTensor> {
        self.forward_with(ByteKernels::detect(), input, layout)
    }

    /// [`Self::forward`] with the given kernels.
    pub fn forward_with(
        &self,
        kernels: ByteKernels,
        input: &QTensor,
        layout: PoolInputLayout,
    ) -> Result<QTensor> {
        let tables = self.tables(input.qparams());
        lookup_forward(&tables, kernels, input, layout, self.engine, self.output)
    }
}

/// Looks every byte of `input` up in `tables` (x86's tail table on the last `numel mod 64`
/// elements in PyTorch's memory order `layout`), giving `output` qparams and the input's
/// memory format.
pub(crate) fn lookup_forward(
    tables: &ActivationTables,
    kernels: ByteKernels,
    input: &QTensor,
    layout: PoolInputLayout,
    engine: Engine,
    output: QParamsPt,
) -> Result<QTensor> {
    let data = input.data();
    let mut out = Buffer::new(data.len());
    kernels.lookup(&tables.body, data, &mut out);
    if engine == Engine::X86 && tables.tail != tables.body {
        let n = data.len();
        for j in n - n % X86_BLOCK..n {
            let i = stored_index(j, input.shape(), layout, input.format());
            out[i] = tables.tail[data[i] as usize];
        }
    }
    QTensor::from_buffer(out, input.shape(), output, input.format())
}

/// Where the element at `j` in PyTorch's memory order (`layout`) lies in data stored in
/// `stored` (the two orders differ only for rank-4 tensors).
fn stored_index(j: usize, shape: &[usize], layout: PoolInputLayout, stored: MemoryFormat) -> usize {
    let channels_last = layout == PoolInputLayout::ChannelsLast;
    if shape.len() != 4 || channels_last == (stored == MemoryFormat::ChannelsLast) {
        return j;
    }
    let (c, hw) = (shape[1], shape[2] * shape[3]);
    let (n, rest) = (j / (c * hw), j % (c * hw));
    // NCHW `[n, ch, p]` ↔ NHWC `[n, p, ch]`.
    let (ch, p) = match channels_last {
        true => (rest % c, rest / c),
        false => (rest / hw, rest % hw),
    };
    let within = match stored {
        MemoryFormat::ChannelsLast => p * c + ch,
        MemoryFormat::Contiguous => ch * hw + p,
    };
    n * c * hw + within
}
