//! Depthwise convolution as a custom Burn operation with its own backward pass.
//!
//! [`depthwise_conv2d`] computes what `burn::tensor::module::conv2d` computes for
//! `groups == channels` (PyTorch: `torch.nn.functional.conv2d(x, w, groups=C)`), but on the
//! `flex` CPU backend it runs [`super::depthwise_kernels`] for the forward pass and both
//! gradients instead of Burn's per-channel GEMMs. Other backends (wgpu, CUDA) keep Burn's own
//! convolution and its backward pass through the trait's default bodies, so the numbers there are
//! unchanged.
//!
//! The backward pass is the `Autodiff<B, C>` implementation below (Burn's
//! `#[backend_extension]` routes to it; it does not derive gradients itself).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use super::depthwise_kernels::{self, DepthwiseGeometry};

/// Depthwise convolution with a backward pass of its own. The default bodies are Burn's generic
/// convolution and its gradients; backends with faster kernels override them.
#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait DepthwiseConvBackend: Backend {
    /// `y = conv2d(x, w, groups = C)` without bias.
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// `(∂L/∂x, ∂L/∂w)` of [`Self::depthwise_conv2d`] (both: they share their setup).
    fn depthwise_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dx = Self::conv2d_x_backward(
            x.clone(),
            weight.clone(),
            output_grad.clone(),
            options.clone(),
        );
        (
            dx,
            Self::conv2d_weight_backward(x, weight, output_grad, options),
        )
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl DepthwiseConvBackend for burn::backend::Cube {}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;

    use super::super::flex_io::{tensor, values, zeros};
    use burn::backend::ops::{ConvOptions, ModuleOps};
    use burn::tensor::DType;

    use super::{DepthwiseConvBackend, DepthwiseGeometry, depthwise_kernels};

    /// The geometry when `x`/`w` are an `f32` depthwise convolution the kernels take
    /// (dilation 1), else `None` and Burn's own convolution runs.
    fn geometry(x: &FlexTensor, w: &FlexTensor, o: &ConvOptions<2>) -> Option<DepthwiseGeometry> {
        let ([n, c, h, wd], [co, ci, kh, kw]) = (dims4(x)?, dims4(w)?);
        let supported = x.dtype() == DType::F32
            && w.dtype() == DType::F32
            && o.groups == c
            && co == c
            && ci == 1
            && o.dilation == [1, 1]
            && n * c * h * wd > 0;
        let out = |i: usize, k: usize, d: usize| {
            let (p0, p1) = o.padding[d];
            (i + p0 + p1).checked_sub(k).map(|r| r / o.stride[d] + 1)
        };
        let output = [out(h, kh, 0)?, out(wd, kw, 1)?];
        supported.then_some(DepthwiseGeometry {
            batch: n,
            channels: c,
            input: [h, wd],
            output,
            kernel: [kh, kw],
            stride: o.stride,
            padding: [o.padding[0].0, o.padding[1].0],
        })
    }

    fn dims4(t: &FlexTensor) -> Option<[usize; 4]> {
        let shape = t.layout().shape();
        (shape.num_dims() == 4).then(|| [shape[0], shape[1], shape[2], shape[3]])
    }

    impl DepthwiseConvBackend for Flex {
        fn depthwise_conv2d(x: FlexTensor, w: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
            let Some(g) = geometry(&x, &w, &options) else {
                return Flex::conv2d(x, w, None, options);
            };
            let mut y = zeros(g.batch * g.channels * g.output[0] * g.output[1]);
            depthwise_kernels::forward(&g, &values(&x), &values(&w), &mut y);
            tensor(y, [g.batch, g.channels, g.output[0], g.output[1]])
        }

        fn depthwise_conv2d_backward(
            x: FlexTensor,
            w: FlexTensor,
            dy: FlexTensor,
            options: ConvOptions<2>,
        ) -> (FlexTensor, FlexTensor) {
            let Some(g) = geometry(&x, &w, &options) else {
                let dx = Flex::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), options.clone());
                return (dx, Flex::conv2d_weight_backward(x, w, dy, options));
            };
            let mut dx = zeros(g.batch * g.channels * g.input[0] * g.input[1]);
            let mut dw = vec![0.0; g.channels * g.kernel[0] * g.kernel[1]];
            depthwise_kernels::backward(
                &g,
                &values(&x),
                &values(&w),
                &values(&dy),
                &mut dx,
                &mut dw,
            );
            (
                tensor(dx, [g.batch, g.channels, g.input[0], g.input[1]]),
                tensor(dw, [g.channels, 1, g.kernel[0], g.kernel[1]]),
            )
        }
    }
}

impl<B: Backend + DepthwiseConvBackend, C: CheckpointStrategy> DepthwiseConvBackend
    for Autodiff<B, C>
{
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DepthwiseConv2d;

        impl<B: Backend + DepthwiseConvBackend> Backward<B, 2> for DepthwiseConv2d {
            type State = (NodeId, NodeId, ConvOptions<2>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_weight] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, weight_state, options) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                let weight =
                    checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);
                // Both gradients in one call; an untracked input's `dx` is dropped.
                let (dx, dw) = B::depthwise_conv2d_backward(x, weight, grad, options);
                for (node, grad) in [(node_x, dx), (node_weight, dw)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        match DepthwiseConv2d
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let y = B::depthwise_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    options.clone(),
                );
                prep.finish((x_state, weight_state, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::depthwise_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }
}

/// `conv2d(x, weight, groups = C)` (no bias) through [`DepthwiseConvBackend`]: the flex
/// kernels on the CPU, Burn's convolution elsewhere; differentiable on every autodiff device.
///
/// `x` is `[N, C, H, W]`, `weight` is `[C, 1, KH, KW]` and `options.groups` must equal `C`.
pub fn depthwise_conv2d(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DepthwiseConvBackend>::depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ))
}
