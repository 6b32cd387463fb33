//! The one door through which the crate reads tensor data back to the host, and its counter.
//!
//! On a GPU a read (`into_data`, `into_scalar`) waits for every queued kernel: one read per
//! observer and step was what made a QAT step five times a float step there. The training
//! path (observers, fake-quant qparams, the switches) keeps its values on the device; what
//! still reads goes through `read`, which counts per thread, so a test can run a few QAT
//! steps and check that [`host_reads`] did not move (`tests/it/qat_no_sync.rs`).
//!
//! On the CPU backend (flex) the fused kernels read their inputs from host memory directly:
//! that is not a synchronisation, but the reads that go through `read` are counted all the
//! same.

use std::cell::Cell;

use burn::tensor::kind::Basic;
use burn::tensor::{Tensor, TensorData};

thread_local! {
    static READS: Cell<usize> = const { Cell::new(0) };
}

/// Reads of tensor data to the host that the crate made on this thread so far.
pub fn host_reads() -> usize {
    READS.with(Cell::get)
}

/// `t.into_data()`, counted in [`host_reads`].
pub(crate) fn read<const D: usize, K: Basic>(t: Tensor<D, K>) -> TensorData {
    READS.with(|r| r.set(r.get() + 1));
    t.into_data()
}

/// A float tensor's values as host `f32`, counted in [`host_reads`].
pub(crate) fn read_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    read(t)
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor data")
}
