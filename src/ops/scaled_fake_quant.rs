//! The QAT ConvBn weight `fake_quant(W · s)` as one custom operation (PyTorch:
//! `weight_fake_quant(weight * scale_factor.reshape(...))` in `_ConvBnNd._forward_approximate`),
//! on the `flex` CPU backend: one pass forward and one pass backward giving both `∂W` and `∂s`,
//! where the composition of a broadcast multiply and the fake-quant op took five passes over the
//! weights and three more autodiff nodes per layer, a fixed cost of every QAT step. See
//! [`super::scaled_fake_quant_kernels`] for the formulas.
//!
//! `quant::FakeQuantize` takes it on flex devices for per-channel (axis 0) min/max
//! weight fake-quants; elsewhere the caller keeps the composition, so this extension lists only
//! `Flex` and `Autodiff`.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use super::fake_quant_kernels::FakeQuantSpec;

/// `fake_quant(W · s)` per row of axis 0, with its gradients to `W` and `s`.
#[backend_extension(Flex, Autodiff)]
pub trait ScaledFakeQuantBackend: Backend {
    /// `fake_quant(W · s)`, `s` holding one factor per row (`W.dims()[0]` of them).
    fn scaled_fake_quantize(
        w: FloatTensor<Self>,
        s: FloatTensor<Self>,
        spec: FakeQuantSpec,
    ) -> FloatTensor<Self>;

    /// `(∂W, ∂s)` from the output gradient.
    fn scaled_fake_quantize_backward(
        w: FloatTensor<Self>,
        s: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        spec: FakeQuantSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `[min, max, finite]` of each row of `W · s`, as a rank-1 tensor of `3 · rows` values
    /// (the per-channel observer's batch range; no gradient).
    fn scaled_min_max(w: FloatTensor<Self>, s: FloatTensor<Self>) -> FloatTensor<Self>;
}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;

    use super::super::flex_io::{owned_contiguous, tensor, values, zeros};
    use super::super::scaled_fake_quant_kernels as kernels;
    use super::{FakeQuantSpec, ScaledFakeQuantBackend};

    impl ScaledFakeQuantBackend for Flex {
        fn scaled_fake_quantize(w: FlexTensor, s: FlexTensor, spec: FakeQuantSpec) -> FlexTensor {
            let mut y = zeros(w.layout().num_elements());
            kernels::forward(&spec, &values(&w), &values(&s), &mut y);
            tensor(y, w.layout().shape().clone())
        }

        fn scaled_fake_quantize_backward(
            w: FlexTensor,
            s: FlexTensor,
            dy: FlexTensor,
            spec: FakeQuantSpec,
        ) -> (FlexTensor, FlexTensor) {
            let mut grad = owned_contiguous(dy);
            let ds = kernels::backward(&spec, &values(&w), &values(&s), grad.storage_mut());
            let n = ds.len();
            (grad, tensor(ds, [n]))
        }

        fn scaled_min_max(w: FlexTensor, s: FlexTensor) -> FlexTensor {
            let flat: Vec<f32> = kernels::min_max(&values(&w), &values(&s))
                .iter()
                .flat_map(|&(lo, hi, finite)| [lo, hi, if finite { 1.0 } else { 0.0 }])
                .collect();
            let n = flat.len();
            tensor(flat, [n])
        }
    }
}

impl<B: Backend + ScaledFakeQuantBackend, C: CheckpointStrategy> ScaledFakeQuantBackend
    for Autodiff<B, C>
{
    fn scaled_fake_quantize(
        w: FloatTensor<Self>,
        s: FloatTensor<Self>,
        spec: FakeQuantSpec,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ScaledFakeQuantize;

        type Primitive<B> = <B as burn::backend::BackendTypes>::FloatTensorPrimitive;

        impl<B: Backend + ScaledFakeQuantBackend> Backward<B, 2> for ScaledFakeQuantize {
            /// `W`, `s` (parameters and a `[C]` vector: kept, not recomputed) and the qparams.
            type State = (Primitive<B>, Primitive<B>, FakeQuantSpec);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_w, node_s] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let (w, s, spec) = ops.state;
                let (dw, ds) =
                    <B as ScaledFakeQuantBackend>::scaled_fake_quantize_backward(w, s, dy, spec);
                for (node, grad) in [(node_w, dw), (node_s, ds)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let prepared = ScaledFakeQuantize
            .prepare::<C>([w.node(), s.node()])
            .compute_bound()
            .stateful();
        let (w_p, s_p) = (w.into_primitive(), s.into_primitive());
        let y = <B as ScaledFakeQuantBackend>::scaled_fake_quantize(
            w_p.clone(),
            s_p.clone(),
            spec.clone(),
        );
        match prepared {
            OpsKind::Tracked(prep) => prep.finish((w_p, s_p, spec), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// The first-order gradients as untracked tensors (the op is piecewise linear).
    fn scaled_fake_quantize_backward(
        w: FloatTensor<Self>,
        s: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        spec: FakeQuantSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dw, ds) = <B as ScaledFakeQuantBackend>::scaled_fake_quantize_backward(
            w.into_primitive(),
            s.into_primitive(),
            output_grad.into_primitive(),
            spec,
        );
        let inner = <Self as AutodiffBackend>::from_inner;
        (inner(dw), inner(ds))
    }

    fn scaled_min_max(w: FloatTensor<Self>, s: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(<B as ScaledFakeQuantBackend>::scaled_min_max(
            <Self as AutodiffBackend>::inner(w),
            <Self as AutodiffBackend>::inner(s),
        ))
    }
}

/// `fake_quant(W · s)` with `s` one factor per row of axis 0 (`spec` per channel of axis 0),
/// differentiable in `W` and `s`, for `f32` tensors on a device where [`super::has_cpu_kernels`]
/// holds.
pub(crate) fn scaled_fake_quantize<const D: usize>(
    w: Tensor<D>,
    s: Tensor<1>,
    spec: FakeQuantSpec,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ScaledFakeQuantBackend>::scaled_fake_quantize(
        w.into_dispatch(),
        s.into_dispatch(),
        spec,
    ))
}

/// Per row of axis 0: `(min, max)` of `W · s`, and whether every value was finite.
pub(crate) fn scaled_min_max_rows<const D: usize>(
    w: &Tensor<D>,
    s: &Tensor<1>,
) -> (Vec<f32>, Vec<f32>, bool) {
    let t: Tensor<1> = Tensor::from_dispatch(<Dispatch as ScaledFakeQuantBackend>::scaled_min_max(
        w.clone().into_dispatch(),
        s.clone().into_dispatch(),
    ));
    super::min_max::split_ranges(
        crate::state::host_read::read(t)
            .try_to_vec::<f32>()
            .expect("the min/max op returns f32 values"),
    )
}
