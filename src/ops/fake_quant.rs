//! Fake quantization as one custom operation with a straight-through backward pass (PyTorch:
//! `torch.fake_quantize_per_{tensor,channel}_affine` and their `_cachemask_backward`), on the
//! `flex` CPU backend: one pass forward, one pass backward, no temporaries.
//!
//! `quant::functional` takes it on flex devices; elsewhere (wgpu, CUDA) it keeps its
//! composition of Burn tensor ops, so this extension lists only `Flex` and `Autodiff`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

pub use super::fake_quant_kernels::FakeQuantSpec;

/// Fake quantization with its straight-through gradient.
#[backend_extension(Flex, Autodiff)]
pub trait FakeQuantBackend: Backend {
    /// `fake_quant(x)` with the given parameters.
    fn fake_quantize(x: FloatTensor<Self>, spec: FakeQuantSpec) -> FloatTensor<Self>;

    /// `dy · mask(x)`: the straight-through gradient.
    fn fake_quantize_backward(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        spec: FakeQuantSpec,
    ) -> FloatTensor<Self>;
}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;

    use super::super::flex_io::{owned_contiguous, tensor, values, zeros};

    use super::super::fake_quant_kernels;
    use super::{FakeQuantBackend, FakeQuantSpec};

    impl FakeQuantBackend for Flex {
        fn fake_quantize(x: FlexTensor, spec: FakeQuantSpec) -> FlexTensor {
            let mut y = zeros(x.layout().num_elements());
            fake_quant_kernels::forward(&spec, &values(&x), &mut y);
            tensor(y, x.layout().shape().clone())
        }

        fn fake_quantize_backward(
            x: FlexTensor,
            dy: FlexTensor,
            spec: FakeQuantSpec,
        ) -> FlexTensor {
            let mut grad = owned_contiguous(dy);
            fake_quant_kernels::backward(&spec, &values(&x), grad.storage_mut());
            grad
        }
    }
}

impl<B: Backend + FakeQuantBackend, C: CheckpointStrategy> FakeQuantBackend for Autodiff<B, C> {
    fn fake_quantize(x: FloatTensor<Self>, spec: FakeQuantSpec) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FakeQuantize;

        impl<B: Backend + FakeQuantBackend> Backward<B, 1> for FakeQuantize {
            type State = (NodeId, FakeQuantSpec);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let (x_state, spec) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                    <B as FakeQuantBackend>::fake_quantize_backward(x, dy, spec)
                });
            }
        }

        match FakeQuantize
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let y = <B as FakeQuantBackend>::fake_quantize(x.into_primitive(), spec.clone());
                prep.finish((x_state, spec), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(<B as FakeQuantBackend>::fake_quantize(
                x.into_primitive(),
                spec,
            )),
        }
    }

    /// The straight-through gradient as an untracked tensor (it is piecewise constant in `x`).
    fn fake_quantize_backward(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        spec: FakeQuantSpec,
    ) -> FloatTensor<Self> {
        use burn::backend::AutodiffBackend;
        <Self as AutodiffBackend>::from_inner(<B as FakeQuantBackend>::fake_quantize_backward(
            x.into_primitive(),
            output_grad.into_primitive(),
            spec,
        ))
    }
}

/// Fake quantization of an `f32` tensor on a device where [`super::has_cpu_kernels`] holds,
/// differentiable (straight-through) under autodiff (elsewhere the extension has no backend to
/// run on).
pub(crate) fn fake_quantize<const D: usize>(x: Tensor<D>, spec: FakeQuantSpec) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FakeQuantBackend>::fake_quantize(
        x.into_dispatch(),
        spec,
    ))
}
