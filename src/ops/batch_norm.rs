//! Training-mode batch norm as one custom operation with its own backward pass (PyTorch:
//! `torch.nn.functional.batch_norm(x, ..., training=True)`), on the `flex` CPU backend.
//!
//! [`crate::nn::BatchNorm2d`] takes it on flex autodiff devices; elsewhere (wgpu, CUDA) it keeps
//! its composition of Burn tensor ops, so this extension lists only `Flex` and `Autodiff`.
//! The running-statistics update stays in the layer: this op returns the batch mean and biased
//! variance as untracked tensors.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use super::batch_norm_kernels::{self, BatchNormGeometry};

/// Training-mode batch norm over `[N, C, ...]`.
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormTrainBackend: Backend {
    /// `(y, batch mean, biased batch variance)`.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `(∂x, ∂γ, ∂β)` from the output gradient and the forward pass's batch statistics.
    fn batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;

    use super::super::flex_io::{tensor, values};

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
            gamma: FlexTensor,
            beta: FlexTensor,
            eps: f64,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let g = geometry(&x);
            let mut y = vec![0.0; x.layout().num_elements()];
            let (mean, var) = batch_norm_kernels::forward(
                &g,
                &values(&x),
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
            gamma: FlexTensor,
            mean: FlexTensor,
            var: FlexTensor,
            dy: FlexTensor,
            eps: f64,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let g = geometry(&x);
            let mut dx = vec![0.0; x.layout().num_elements()];
            let (dgamma, dbeta) = batch_norm_kernels::backward(
                &g,
                &values(&x),
                &values(&gamma),
                &values(&mean),
                &values(&var),
                eps as f32,
                &values(&dy),
                &mut dx,
            );
            (
                tensor(dx, x.layout().shape().clone()),
                vector(dgamma),
                vector(dbeta),
            )
        }
    }
}

impl<B: Backend + BatchNormTrainBackend, C: CheckpointStrategy> BatchNormTrainBackend
    for Autodiff<B, C>
{
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct BatchNormTrain;

        type State<B> = (
            NodeId,
            NodeId,
            <B as burn::backend::BackendTypes>::FloatTensorPrimitive,
            <B as burn::backend::BackendTypes>::FloatTensorPrimitive,
            f64,
        );

        impl<B: Backend + BatchNormTrainBackend> Backward<B, 3> for BatchNormTrain {
            type State = State<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let (x_state, gamma_state, mean, var, eps) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                let gamma =
                    checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(gamma_state);
                let (dx, dgamma, dbeta) = <B as BatchNormTrainBackend>::batch_norm_train_backward(
                    x, gamma, mean, var, dy, eps,
                );
                for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let prepared = BatchNormTrain
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (x_p, gamma_p, beta_p) = (
            x.primitive().clone(),
            gamma.primitive().clone(),
            beta.into_primitive(),
        );
        let (y, mean, var) =
            <B as BatchNormTrainBackend>::batch_norm_train(x_p, gamma_p, beta_p, eps);
        let y = match prepared {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                prep.finish((x_state, gamma_state, mean.clone(), var.clone(), eps), y)
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
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dgamma, dbeta) = <B as BatchNormTrainBackend>::batch_norm_train_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            output_grad.into_primitive(),
            eps,
        );
        (
            <Self as AutodiffBackend>::from_inner(dx),
            <Self as AutodiffBackend>::from_inner(dgamma),
            <Self as AutodiffBackend>::from_inner(dbeta),
        )
    }
}

/// Training-mode batch norm of `x` (`[N, C, ...]`, `f32`) with per-channel `gamma`/`beta`:
/// `(y, batch mean, biased batch variance)`; the statistics carry no gradient. Only on devices
/// where [`super::has_cpu_kernels`] holds (elsewhere the extension has no backend to run on).
pub(crate) fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let (y, mean, var) = <Dispatch as BatchNormTrainBackend>::batch_norm_train(
        x.into_dispatch(),
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
