//! [`MaxPool2d`]: max pooling that runs at every stage, PyTorch's `torch.nn.MaxPool2d` (which a
//! quantized model keeps as it is: it runs on quint8 tensors directly).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{DType, Tensor};

use super::batch::Batch;
use super::layer::{QuantLayer, QuantOp, address_of};
use crate::Result;
use crate::int8::pool::{MaxPool2dSpec, max_pool2d as int8_max_pool2d};
use crate::int8::{Engine, PoolInputLayout, QTensor};
use crate::onnx::proto::AttributeProto;
use crate::onnx::{Act, Builder, ExportKind};
use crate::ops::{has_cpu_kernels, max_pool2d_inference};

/// The configuration of a [`MaxPool2d`], `nn.MaxPool2d(kernel_size, stride, padding, dilation,
/// ceil_mode)` with each size given per axis (height, width).
#[derive(Config, Debug)]
pub struct MaxPool2dConfig {
    /// Window size.
    pub kernel_size: [usize; 2],
    /// Stride (PyTorch's default: the kernel size).
    #[config(default = "kernel_size")]
    pub stride: [usize; 2],
    /// Implicit padding on both sides of each axis, at most half the kernel; padded positions
    /// never win (as `-inf`).
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Spacing of the window's taps.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Output sizes rounded up instead of down (a last window must start inside the input or
    /// its left padding, as in PyTorch).
    #[config(default = false)]
    pub ceil_mode: bool,
}

impl MaxPool2dConfig {
    /// The layer; errors for what PyTorch rejects (a zero size, padding over half the kernel).
    pub fn init(&self) -> Result<MaxPool2d> {
        let spec = MaxPool2dSpec {
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            ceil_mode: self.ceil_mode,
        };
        spec.check()?;
        Ok(MaxPool2d { spec })
    }
}

/// Max pooling, `y[n, c, i, j] = max over (p, q) < kernel_size of
/// x[n, c, i·stride₀ + p·dilation₀ − padding₀, j·stride₁ + q·dilation₁ − padding₁]` over the
/// positions inside the input: `[N, C, H, W]` → `[N, C, H', W']`, PyTorch's `nn.MaxPool2d`
/// (`H' = ⌊(H + 2·padding₀ − dilation₀·(kernel₀ − 1) − 1) / stride₀⌋ + 1`, rounded up with
/// `ceil_mode`).
///
/// It has no quantization of its own: `prepare` attaches nothing (as PyTorch's eager mode
/// attaches no observer to it), it is ready for int8 as it is, and its int8 forward keeps the
/// input's scale and zero-point (`quantized::max_pool2d`, see [`crate::int8::pool`]).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::nn::MaxPool2dConfig;
///
/// let pool = MaxPool2dConfig::new([3, 3])
///     .with_stride([2, 2])
///     .with_padding([1, 1])
///     .init()
///     .unwrap();
/// let x = Tensor::<4>::ones([1, 2, 9, 9], &Device::flex());
/// assert_eq!(pool.forward(x).dims(), [1, 2, 5, 5]);
/// ```
#[derive(Module, Debug)]
pub struct MaxPool2d {
    /// Window, stride, padding, dilation and rounding.
    #[module(skip)]
    pub spec: MaxPool2dSpec,
}

impl MaxPool2d {
    /// Max pooling of `x` on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        X::apply(self, vec![x])
    }
}

/// No quantization parameters of its own: nothing to prepare, convert or save, and ready for
/// int8 as it is.
impl QuantLayer for MaxPool2d {
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }

    fn is_converted(&self) -> bool {
        true
    }
}

impl QuantOp<4> for MaxPool2d {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "MaxPool2d"
    }

    fn forward_float(&self, mut inputs: Vec<Tensor<4>>) -> Tensor<4> {
        let s = &self.spec;
        let x = inputs.remove(0);
        // Where nothing trains on the CPU (no indices needed for a backward pass): the crate's
        // kernel, several times faster than flex's.
        let device = x.device();
        let [_, _, h, w] = x.dims();
        if !device.is_autodiff()
            && has_cpu_kernels(&device)
            && x.dtype() == DType::F32
            && s.dilation == [1, 1]
            && let (Ok(oh), Ok(ow)) = (s.output_size(0, h), s.output_size(1, w))
        {
            return max_pool2d_inference(x, s.kernel_size, s.stride, s.padding, [oh, ow]);
        }
        let options = MaxPoolOptions::new(s.kernel_size)
            .with_stride(s.stride)
            .with_padding(s.padding)
            .with_dilation(s.dilation)
            .with_ceil_mode(s.ceil_mode);
        max_pool2d(x, options)
    }

    /// The native kernel's result (padding skipped); a model's batches run
    /// [`Self::forward_int8_in`] with their engine.
    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        int8_max_pool2d(inputs[0], &self.spec, Engine::X86)
    }

    fn forward_int8_in(
        &self,
        inputs: &[&QTensor],
        engine: Engine,
        _: PoolInputLayout,
    ) -> Result<QTensor> {
        int8_max_pool2d(inputs[0], &self.spec, engine)
    }

    /// `MaxPool`; on int8 activations `DQ → MaxPool → Q` with the input's qparams. ONNX skips
    /// padded positions, so qnnpack's dilated windows at the edges (which read the nearest
    /// input position, see [`crate::int8::pool`]) can differ.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        let s = &self.spec;
        let ints = |v: [usize; 2]| v.map(|x| x as i64);
        let [p0, p1] = ints(s.padding);
        let attrs = vec![
            AttributeProto::int("ceil_mode", s.ceil_mode as i64),
            AttributeProto::ints("dilations", &ints(s.dilation)),
            AttributeProto::ints("kernel_shape", &ints(s.kernel_size)),
            AttributeProto::ints("pads", &[p0, p1, p0, p1]),
            AttributeProto::ints("strides", &ints(s.stride)),
        ];
        let x = graph.float_input(&inputs[0], path)?;
        let y = graph.node("MaxPool", &[&x], &format!("{path}.float"), attrs)?;
        let output = match (&inputs[0], graph.kind) {
            (Act::Quant(_, q), ExportKind::Int8) => Some(q.clone()),
            _ => None,
        };
        graph.finish(y, output, path)
    }
}
