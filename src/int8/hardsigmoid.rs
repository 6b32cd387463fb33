//! Quantized hardsigmoid (`F.hardsigmoid` on a quint8 tensor → `hardsigmoid_quantized_cpu`,
//! `aten/src/ATen/native/quantized/cpu/qhardsigmoid.cpp`), `h(x) = min(max(x + 3, 0), 6) / 6`.
//! The output qparams are fixed, `(1/256, 0)` for quint8, on both engines (as PyTorch's
//! `FixedQParamsFakeQuantize` for it in QAT), and the output keeps the input's memory format.
//!
//! Each engine's arithmetic is hardswish's with `h` in its place ([`crate::int8::hardswish`]):
//! qnnpack's table (`pytorch_qnnp_create_hardsigmoid_nc_q8`) and x86's `fma` body and plain
//! scalar tail (`qhardsigmoid_kernel`). Scaling by 256 is exact, so only the dequantize can
//! tell the two apart; PyTorch 2.5.1 agrees with it on every byte of 3 000 random input
//! qparams per engine (`scripts/gen_functional_int8_fixtures.py`).

use super::engine::Engine;
use super::hardswish::{ActivationTables, lookup_forward};
use super::kernels::bytewise::ByteKernels;
use super::pool::PoolInputLayout;
use super::tensor::{QParamsPt, QTensor};
use crate::Result;

/// The fixed output qparams of quint8 hardsigmoid: scale `1/256`, zero-point 0.
pub const HARDSIGMOID_OUTPUT: QParamsPt = QParamsPt {
    scale: 1.0 / 256.0,
    zero_point: 0,
};

/// `min(max(x + 3, 0), 6) / 6` in f32, in PyTorch's order of operations.
#[inline]
pub fn hardsigmoid_f32(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// The tables of `engine`'s hardsigmoid for an input with qparams `input`.
pub fn hardsigmoid_tables(input: QParamsPt, engine: Engine) -> ActivationTables {
    ActivationTables::of(hardsigmoid_f32, input, HARDSIGMOID_OUTPUT, engine)
}

/// Hardsigmoid of `input`, which PyTorch would hold in `layout`, with `engine`'s arithmetic on
/// the given kernels; the output has [`HARDSIGMOID_OUTPUT`] qparams.
pub fn hardsigmoid_with(
    kernels: ByteKernels,
    input: &QTensor,
    engine: Engine,
    layout: PoolInputLayout,
) -> Result<QTensor> {
    let tables = hardsigmoid_tables(input.qparams(), engine);
    lookup_forward(&tables, kernels, input, layout, engine, HARDSIGMOID_OUTPUT)
}

/// [`hardsigmoid_with`] on the fastest kernels.
pub fn hardsigmoid(input: &QTensor, engine: Engine, layout: PoolInputLayout) -> Result<QTensor> {
    hardsigmoid_with(ByteKernels::detect(), input, engine, layout)
}
