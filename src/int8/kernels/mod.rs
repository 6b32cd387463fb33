//! The int8 kernel interface, the portable reference kernels and the default fast ones.
//!
//! Every op ([`Int8Conv2d`], [`Int8Linear`], [`crate::int8::Int8Add`], the pool) validates shapes and
//! precomputes its parameters once, then hands the hot loop to an [`Int8Kernels`]
//! implementation. [`Reference`] is plain safe Rust, written for obviousness; faster kernels
//! (issue 8: AVX2, packed layouts, threads) implement the same trait and are tested bit for bit
//! against it.
//!
//! Preconditions (checked by the ops, so kernels need not re-check): the input and output
//! slices have the lengths the op's shapes imply.

pub mod direct;
pub mod reference;

pub use direct::Direct;
pub use reference::Reference;

/// The kernels the int8 layers run by default.
pub const DEFAULT: Direct = Direct;

use super::add::AddParams;
use super::conv::Int8Conv2d;
use super::linear::Int8Linear;
use super::pool::PoolParams;
use super::requant::Requant;
use super::tensor::QTensor;

/// A set of int8 kernels. All methods write every element of `out`.
pub trait Int8Kernels {
    /// Quantized 2-D convolution of the NCHW `input` into the NCHW `out`
    /// (`[n, op.out_channels(), oh, ow]` with `op.output_hw(h, w)`), requantized by `rq`.
    fn conv2d(&self, op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]);

    /// Quantized linear layer: `input` is `[n, in_features]`, `out` is `[n, out_features]`.
    fn linear(&self, op: &Int8Linear, rq: &Requant, input: &QTensor, out: &mut [u8]);

    /// Elementwise quantized add of two equally long quint8 slices.
    fn add(&self, p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]);

    /// Adaptive average pooling of the NCHW `input` to `[n, c, 1, 1]`.
    fn global_avg_pool(&self, p: &PoolParams, input: &QTensor, out: &mut [u8]);
}
