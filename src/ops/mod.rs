//! Custom differentiable operations: Burn backend extensions with a backward pass of their own,
//! where Burn's generic path is the bottleneck of a QAT training step on the CPU.
//!
//! Each op has a portable reference kernel on `f32` slices (`*_kernels`) and an extension trait
//! whose default bodies are Burn's own ops (or a caller that keeps Burn's composition off the
//! CPU), so every backend runs it and only the CPU (`flex`) one takes the fast path.

pub mod batch_norm;
pub mod batch_norm_kernels;
mod conv_grid;
pub mod conv_inference;
pub mod depthwise_conv2d;
pub mod depthwise_inference;
pub mod depthwise_kernels;
pub mod epilogue;
pub mod fake_quant;
pub mod fake_quant_kernels;
mod flex_io;
pub mod inference_conv2d;
mod lanes;
pub mod max_pool_inference;
pub mod min_max;
pub mod scaled_fake_quant;
pub mod scaled_fake_quant_kernels;
mod simd;

pub use batch_norm::BatchNormTrainBackend;
pub(crate) use batch_norm::batch_norm_train;
pub use batch_norm_kernels::BatchNormGeometry;
pub use depthwise_conv2d::{DepthwiseConvBackend, depthwise_conv2d};
pub use depthwise_kernels::DepthwiseGeometry;
pub use epilogue::Epilogue;
pub(crate) use fake_quant::fake_quantize;
pub use fake_quant::{FakeQuantBackend, FakeQuantSpec};
pub(crate) use inference_conv2d::channel_values;
pub use inference_conv2d::{InferenceConvBackend, conv2d_inference};
pub use max_pool_inference::{InferencePoolBackend, max_pool2d_inference};
pub use min_max::MinMaxBackend;
pub(crate) use min_max::min_max_rows;
pub use scaled_fake_quant::ScaledFakeQuantBackend;
pub(crate) use scaled_fake_quant::{scaled_fake_quantize, scaled_min_max_rows};

use burn::backend::DispatchDevice;

/// Values per parallel task in the slice kernels: enough to outweigh rayon's per-task cost.
const TASK_VALUES: usize = 1 << 14;

/// Values per parallel task over runs of `run` values that must not be split (a channel's
/// values): whole runs, at least [`TASK_VALUES`] of them when runs are short (a depthwise
/// weight's channel is 9 values; one task each would be all overhead).
fn task_len(run: usize) -> usize {
    let run = run.max(1);
    run * (TASK_VALUES / run).max(1)
}
use burn::tensor::Device;
use std::cell::Cell;

thread_local! {
    static GENERIC_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Whether `device` (plain or autodiff) is the flex CPU backend, where the ops that list only
/// `Flex` and `Autodiff` (batch norm, fake-quant) run; their callers keep Burn's composition
/// elsewhere. False on every device while [`force_generic_path`] holds on this thread.
pub fn has_cpu_kernels(device: &Device) -> bool {
    !GENERIC_ONLY.with(Cell::get)
        && matches!(
            device.clone().without_autodiff().as_dispatch(),
            DispatchDevice::Flex(_)
        )
}

/// Makes [`has_cpu_kernels`] false on this thread until the guard drops, so that flex runs
/// exactly the code a GPU backend runs (Burn's composition, the observers and qparams as device
/// tensors). For tests without a GPU; not a user setting.
#[doc(hidden)]
pub fn force_generic_path() -> GenericPathGuard {
    GenericPathGuard {
        previous: GENERIC_ONLY.with(|g| g.replace(true)),
    }
}

/// Restores the previous setting of [`force_generic_path`] when dropped.
#[doc(hidden)]
#[must_use = "the generic path is forced only while the guard lives"]
pub struct GenericPathGuard {
    previous: bool,
}

impl Drop for GenericPathGuard {
    fn drop(&mut self) {
        GENERIC_ONLY.with(|g| g.set(self.previous));
    }
}
