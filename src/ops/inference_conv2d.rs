//! The inference convolution: `epilogue(conv2d(x, w))` in one op, with the bias, batch norm on
//! running statistics and ReLU/ReLU6 of the [`Epilogue`] applied while each output tile is in
//! cache (PyTorch eager runs them as passes of their own: `Conv2d`, `BatchNorm2d`, `ReLU6`).
//!
//! On the `flex` CPU backend, depthwise convolutions run [`super::depthwise_inference`] and
//! dense ones (groups 1, dilation 1) [`super::conv_inference`]; the other shapes, and every other
//! backend, run Burn's convolution and the epilogue as tensor ops (the trait's default body). It
//! carries no gradient: the layers call it only where nothing trains (a plain, non-autodiff
//! device), and keep Burn's ops and the crate's differentiable ones for training.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use super::epilogue::Epilogue;

/// `epilogue(conv2d(x, weight))` without a gradient.
#[backend_extension(Flex, Autodiff)]
pub trait InferenceConvBackend: Backend {
    /// `y[:, c] = clamp(conv2d(x, weight)[:, c] · scale[c] + shift[c], lo, hi)`.
    fn conv2d_inference(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self>;
}

mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::ops::{ConvOptions, ModuleOps};
    use burn::tensor::DType;

    use super::super::conv_inference::{self, ConvGeometry};
    use super::super::depthwise_inference;
    use super::super::depthwise_kernels::DepthwiseGeometry;
    use super::super::flex_io::{tensor, values};
    use super::{Epilogue, InferenceConvBackend};

    /// `[N, C_in, H, W]`, `[C_out, C_in/groups, KH, KW]` and the output side, when the kernels
    /// take the convolution (`f32`, dilation 1, non-empty).
    fn dims(
        x: &FlexTensor,
        w: &FlexTensor,
        o: &ConvOptions<2>,
    ) -> Option<([usize; 8], [usize; 2])> {
        let (xs, ws) = (x.layout().shape(), w.layout().shape());
        if xs.num_dims() != 4 || ws.num_dims() != 4 {
            return None;
        }
        let d = [xs[0], xs[1], xs[2], xs[3], ws[0], ws[1], ws[2], ws[3]];
        let supported = x.dtype() == DType::F32
            && w.dtype() == DType::F32
            && o.dilation == [1, 1]
            && d.iter().all(|&v| v > 0);
        let out = |i: usize, k: usize, a: usize| {
            let (p0, p1) = o.padding[a];
            (i + p0 + p1).checked_sub(k).map(|r| r / o.stride[a] + 1)
        };
        let output = [out(d[2], d[6], 0)?, out(d[3], d[7], 1)?];
        supported.then_some((d, output))
    }

    impl InferenceConvBackend for Flex {
        fn conv2d_inference(
            x: FlexTensor,
            w: FlexTensor,
            options: ConvOptions<2>,
            epilogue: Epilogue,
        ) -> FlexTensor {
            let Some(([n, c, h, wd, co, ci, kh, kw], output)) = dims(&x, &w, &options) else {
                return fallback(x, w, options, epilogue);
            };
            let padding = [options.padding[0].0, options.padding[1].0];
            let mut y = vec![0.0f32; n * co * output[0] * output[1]];
            if options.groups == c && co == c && ci == 1 {
                let g = DepthwiseGeometry {
                    batch: n,
                    channels: c,
                    input: [h, wd],
                    output,
                    kernel: [kh, kw],
                    stride: options.stride,
                    padding,
                };
                depthwise_inference::forward(&g, &values(&x), &values(&w), &epilogue, &mut y);
            } else if options.groups == 1 && ci == c {
                let g = ConvGeometry {
                    batch: n,
                    in_channels: c,
                    out_channels: co,
                    input: [h, wd],
                    output,
                    kernel: [kh, kw],
                    stride: options.stride,
                    padding,
                };
                conv_inference::forward(&g, &values(&x), &values(&w), &epilogue, &mut y);
            } else {
                return fallback(x, w, options, epilogue);
            }
            tensor(y, [n, co, output[0], output[1]])
        }
    }

    /// Burn's convolution, then the epilogue over the output in place.
    fn fallback(x: FlexTensor, w: FlexTensor, options: ConvOptions<2>, e: Epilogue) -> FlexTensor {
        let y = Flex::conv2d(x, w, None, options);
        let shape = y.layout().shape().clone();
        let mut v = values(&y).into_owned();
        let plane = shape[2] * shape[3];
        for (i, chunk) in v.chunks_exact_mut(plane.max(1)).enumerate() {
            e.apply(i % shape[1], chunk);
        }
        tensor(v, shape)
    }
}

impl<B: Backend + InferenceConvBackend, C: CheckpointStrategy> InferenceConvBackend
    for Autodiff<B, C>
{
    fn conv2d_inference(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::conv2d_inference(
            <Self as AutodiffBackend>::inner(x),
            <Self as AutodiffBackend>::inner(weight),
            options,
            epilogue,
        ))
    }
}

/// `epilogue(conv2d(x, weight))` (groups and stride from `options`, no gradient) through
/// [`InferenceConvBackend`]: the crate's kernels on the flex CPU backend. Callers check
/// [`super::has_cpu_kernels`] first and keep Burn's ops elsewhere.
pub fn conv2d_inference(
    x: Tensor<4>,
    weight: Tensor<4>,
    options: ConvOptions<2>,
    epilogue: Epilogue,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as InferenceConvBackend>::conv2d_inference(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
        epilogue,
    ))
}

/// A rank-1 tensor's values (the small per-channel vectors an epilogue is built from).
pub(crate) fn channel_values(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}
