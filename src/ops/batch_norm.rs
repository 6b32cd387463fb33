//! Training-mode batch norm as one custom operation with its own backward pass (PyTorch:
//! `torch.nn.functional.batch_norm(x, ..., training=True)`), on the `flex` CPU backend.
//!
//! `nn::BatchNorm2d` takes it on flex autodiff devices; elsewhere (wgpu, CUDA) it keeps
//! its composition of Burn tensor ops, so this extension lists only `Flex` and `Autodiff`.
//! The running-statistics update stays in the layer: this op returns the batch mean and biased
//! variance as untracked tensors. The input may come with a per-channel divisor, which QAT's
//! ConvBn (`conv(x, W·s) / s`, then batch norm) folds in to save the full-size division and its
//! gradient passes.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use super::batch_norm_kernels::{self, BatchNormGeometry};

/// Training-mode batch norm over `[N, C, ...]` of `x / divisor` (per-channel divisor; ones for
/// plain batch norm).
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormTrainBackend: Backend {
    /// `(y, batch mean, biased batch variance)` of `x / divisor`.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        divisor: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `(∂x, ∂divisor, ∂γ, ∂β)` from the output gradient and the forward pass's batch
    /// statistics; `∂divisor` is zeros unless `divisor_grad`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_backward(
        x: FloatTensor<Self>,
        divisor: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        eps: f64,
        divisor_grad: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );
}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;

    use super::super::flex_io::{tensor, values, zeros};

    use super::{BatchNormGeometry, BatchNormTrainBackend, batch_norm_kernels};

    fn geometry(x: &FlexTensor) -> BatchNormGeometry {
        let dims = x.layout().shape();
        BatchNormGeometry {
            batch: dims[0],
            channels: dims[1],
            inner: (2..dims.num_dims()).map(|d| dims[d]).product(),
        }
    }

    fn vector(values: Vec<f32>) -> FlexTensor {
        let n = values.len();
        tensor(values, [n])
    }

    impl BatchNormTrainBackend for Flex {
        fn batch_norm_train(
            x: FlexTensor,
            divisor: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            eps: f64,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let g = geometry(&x);
            let mut y = zeros(x.layout().num_elements());
            let (mean, var) = batch_norm_kernels::forward(
                &g,
                &values(&x),
                &values(&divisor),
                &values(&gamma),
                &values(&beta),
                eps as f32,
                &mut y,
            );
            (
                tensor(y, x.layout().shape().clone()),
                vector(mean),
                vector(var),
            )
        }

        fn batch_norm_train_backward(
            x: FlexTensor,
            divisor: FlexTensor,
            gamma: FlexTensor,
            mean: FlexTensor,
            var: FlexTensor,
            dy: FlexTensor,
            eps: f64,
            divisor_grad: bool,
        ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
            let g = geometry(&x);
            let mut dx = zeros(x.layout().num_elements());
            let grads = batch_norm_kernels::backward(
                &g,
                &values(&x),
                &values(&divisor),
                &values(&gamma),
                &values(&mean),
                &values(&var),
                eps as f32,
                &values(&dy),
                &mut dx,
                divisor_grad,
            );
            let ddivisor = grads.divisor.unwrap_or_else(|| vec![0.0; g.channels]);
            (
                tensor(dx, x.layout().shape().clone()),
                vector(ddivisor),
                vector(grads.gamma),
                vector(grads.beta),
            )
        }
    }
}

impl<B: Backend + BatchNormTrainBackend, C: CheckpointStrategy> BatchNormTrainBackend
    for Autodiff<B, C>
{
    fn batch_norm_train(
        x: FloatTensor<Self>,
        divisor: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct BatchNormTrain;

        type Primitive<B> = <B as burn::backend::BackendTypes>::FloatTensorPrimitive;
        /// The input's checkpoint; divisor, γ, batch mean and variance (all `[C]`); ε.
        type State<B> = (NodeId, [Primitive<B>; 4], f64);

        impl<B: Backend + BatchNormTrainBackend> Backward<B, 4> for BatchNormTrain {
            type State = State<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 4>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_divisor, node_gamma, node_beta] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let (x_state, [divisor, gamma, mean, var], eps) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                let (dx, ddivisor, dgamma, dbeta) =
                    <B as BatchNormTrainBackend>::batch_norm_train_backward(
                        x,
                        divisor,
                        gamma,
                        mean,
                        var,
                        dy,
                        eps,
                        node_divisor.is_some(),
                    );
                for (node, grad) in [
                    (node_x, dx),
                    (node_divisor, ddivisor),
                    (node_gamma, dgamma),
                    (node_beta, dbeta),
                ] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let prepared = BatchNormTrain
            .prepare::<C>([x.node(), divisor.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (x_p, divisor_p, gamma_p, beta_p) = (
            x.primitive().clone(),
            divisor.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        let (y, mean, var) = <B as BatchNormTrainBackend>::batch_norm_train(
            x_p,
            divisor_p.clone(),
            gamma_p.clone(),
            beta_p,
            eps,
        );
        let y = match prepared {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let vectors = [divisor_p, gamma_p, mean.clone(), var.clone()];
                prep.finish((x_state, vectors, eps), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (
            y,
            <Self as AutodiffBackend>::from_inner(mean),
            <Self as AutodiffBackend>::from_inner(var),
        )
    }

    /// The first-order gradients as untracked tensors (no second-order graph).
    fn batch_norm_train_backward(
        x: FloatTensor<Self>,
        divisor: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        eps: f64,
        divisor_grad: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let (dx, ddivisor, dgamma, dbeta) = <B as BatchNormTrainBackend>::batch_norm_train_backward(
            x.into_primitive(),
            divisor.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            output_grad.into_primitive(),
            eps,
            divisor_grad,
        );
        let inner = <Self as AutodiffBackend>::from_inner;
        (inner(dx), inner(ddivisor), inner(dgamma), inner(dbeta))
    }
}

/// Training-mode batch norm of `x / divisor` (`x`: `[N, C, ...]`, `f32`; `divisor`: `[C]`, ones
/// for plain batch norm) with per-channel `gamma`/`beta`: `(y, batch mean, biased batch
/// variance)`; the statistics carry no gradient, `x`, `divisor`, `gamma` and `beta` do. Only on
/// devices where [`super::has_cpu_kernels`] holds (elsewhere the extension has no backend to run
/// on).
pub(crate) fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    divisor: Tensor<1>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let (y, mean, var) = <Dispatch as BatchNormTrainBackend>::batch_norm_train(
        x.into_dispatch(),
        divisor.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    );
    (
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(var),
    )
}
