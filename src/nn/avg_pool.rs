//! [`AvgPool2d`]: average pooling that runs at every stage, PyTorch's `torch.nn.AvgPool2d`
//! (which a quantized model keeps as it is: it runs on quint8 tensors directly).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Tensor, TensorData};

use super::batch::Batch;
use super::layer::{QuantLayer, QuantOp, address_of};
use crate::error::StageProblem;
use crate::int8::avg_pool::{AvgPool2dSpec, avg_pool2d as int8_avg_pool2d};
use crate::int8::{Engine, PoolInputLayout, QTensor};
use crate::onnx::proto::AttributeProto;
use crate::onnx::{Act, Builder, ExportKind};
use crate::{Error, Result};

/// The configuration of an [`AvgPool2d`], `nn.AvgPool2d(kernel_size, stride, padding,
/// ceil_mode, count_include_pad, divisor_override)` with each size given per axis (height,
/// width).
#[derive(Config, Debug)]
pub struct AvgPool2dConfig {
    /// Window size.
    pub kernel_size: [usize; 2],
    /// Stride (PyTorch's default: the kernel size).
    #[config(default = "kernel_size")]
    pub stride: [usize; 2],
    /// Implicit zero padding on both sides of each axis, at most half the kernel.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Output sizes rounded up instead of down (a last window must start inside the input or
    /// its left padding, as in PyTorch).
    #[config(default = false)]
    pub ceil_mode: bool,
    /// Padded positions count in the divisor (PyTorch's default).
    #[config(default = true)]
    pub count_include_pad: bool,
    /// A fixed divisor instead of the window's size (nonzero).
    #[config(default = "None")]
    pub divisor_override: Option<i32>,
}

impl AvgPool2dConfig {
    /// The layer; errors for what PyTorch rejects (a zero size, padding over half the kernel,
    /// a zero divisor).
    pub fn init(&self) -> Result<AvgPool2d> {
        let spec = AvgPool2dSpec {
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
            divisor_override: self.divisor_override,
        };
        spec.check()?;
        Ok(AvgPool2d { spec })
    }
}

/// Average pooling, `y[n, c, i, j] = Σ x[n, c, i·stride₀ + p − padding₀, j·stride₁ + q −
/// padding₁] / D` over the window positions `(p, q) < kernel_size` inside the input:
/// `[N, C, H, W]` → `[N, C, H', W']`, PyTorch's `nn.AvgPool2d`
/// (`H' = ⌊(H + 2·padding₀ − kernel₀) / stride₀⌋ + 1`, rounded up with `ceil_mode`). `D` is
/// `divisor_override` if set, else the window's extent within the padded input with
/// `count_include_pad`, else the number of input positions it covers.
///
/// It has no quantization of its own: `prepare` attaches nothing (as PyTorch's eager mode
/// attaches no observer to it), it is ready for int8 as it is, and its int8 forward keeps the
/// input's scale and zero-point (`quantized::avg_pool2d`, each engine's arithmetic: see
/// [`crate::int8::avg_pool`]; qnnpack without `ceil_mode` divides by `kernel₀·kernel₁`
/// whatever `count_include_pad` and `divisor_override` say, as PyTorch's does).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::nn::AvgPool2dConfig;
///
/// let pool = AvgPool2dConfig::new([3, 3])
///     .with_stride([2, 2])
///     .with_padding([1, 1])
///     .init()
///     .unwrap();
/// let x = Tensor::<4>::ones([1, 2, 9, 9], &Device::flex());
/// assert_eq!(pool.forward(x).dims(), [1, 2, 5, 5]);
/// ```
#[derive(Module, Debug)]
pub struct AvgPool2d {
    /// Window, stride, padding, rounding and divisor.
    #[module(skip)]
    pub spec: AvgPool2dSpec,
}

impl AvgPool2d {
    /// Average pooling of `x` on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        X::apply(self, vec![x])
    }

    /// Per output pixel, `size / D`: what turns the mean over the input positions a window
    /// covers into PyTorch's quotient; `None` where that is 1 everywhere (or the output is
    /// empty, which Burn's pooling reports).
    fn rescale(&self, h: usize, w: usize) -> Option<Vec<f32>> {
        let s = &self.spec;
        if !s.count_include_pad && s.divisor_override.is_none() {
            return None;
        }
        let (ys, xs) = (s.windows(0, h).ok()?, s.windows(1, w).ok()?);
        let factors: Vec<f32> = ys
            .iter()
            .flat_map(|(rows, pool_y)| {
                xs.iter().map(move |(cols, pool_x)| {
                    let size = rows.len() * cols.len();
                    (size as f64 / s.divisor(size, pool_y * pool_x) as f64) as f32
                })
            })
            .collect();
        factors.iter().any(|&f| f != 1.0).then_some(factors)
    }
}

/// No quantization parameters of its own: nothing to prepare, convert or save, and ready for
/// int8 as it is.
impl QuantLayer for AvgPool2d {
    fn kind(&self) -> &'static str {
        "AvgPool2d"
    }

    fn is_converted(&self) -> bool {
        true
    }
}

impl QuantOp<4> for AvgPool2d {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "AvgPool2d"
    }

    /// Burn's mean over the input positions, rescaled per pixel to PyTorch's divisor.
    fn forward_float(&self, mut inputs: Vec<Tensor<4>>) -> Tensor<4> {
        let s = &self.spec;
        let x = inputs.remove(0);
        let [_, _, h, w] = x.dims();
        let device = x.device();
        let options = AvgPoolOptions::new(s.kernel_size)
            .with_stride(s.stride)
            .with_padding(s.padding)
            .with_count_include_pad(false)
            .with_ceil_mode(s.ceil_mode);
        let y = avg_pool2d(x, options);
        match self.rescale(h, w) {
            Some(factors) => {
                let [_, _, oh, ow] = y.dims();
                let f = Tensor::<4>::from_data(TensorData::new(factors, [1, 1, oh, ow]), &device);
                y * f
            }
            None => y,
        }
    }

    /// The x86 engine's result on a channels-last input (a converted model's convolutions
    /// give channels-last tensors); a model's batches run [`Self::forward_int8_in`] with their
    /// engine and layout.
    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        int8_avg_pool2d(
            inputs[0],
            &self.spec,
            Engine::X86,
            PoolInputLayout::ChannelsLast,
        )
    }

    fn forward_int8_in(
        &self,
        inputs: &[&QTensor],
        engine: Engine,
        layout: PoolInputLayout,
    ) -> Result<QTensor> {
        int8_avg_pool2d(inputs[0], &self.spec, engine, layout)
    }

    /// `AveragePool`; on int8 activations `DQ → AveragePool → Q` with the input's qparams.
    /// ONNX has no `divisor_override` (an error here), and runtimes may divide a `ceil_mode`
    /// window that hangs past the padding differently from PyTorch.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        let s = &self.spec;
        if s.divisor_override.is_some() {
            return Err(Error::Stage {
                path: path.to_string(),
                problem: StageProblem::Unsupported(
                    "ONNX AveragePool has no divisor_override".into(),
                ),
            });
        }
        let ints = |v: [usize; 2]| v.map(|x| x as i64);
        let [p0, p1] = ints(s.padding);
        let attrs = vec![
            AttributeProto::int("ceil_mode", s.ceil_mode as i64),
            AttributeProto::int("count_include_pad", s.count_include_pad as i64),
            AttributeProto::ints("kernel_shape", &ints(s.kernel_size)),
            AttributeProto::ints("pads", &[p0, p1, p0, p1]),
            AttributeProto::ints("strides", &ints(s.stride)),
        ];
        let x = graph.float_input(&inputs[0], path)?;
        let y = graph.node("AveragePool", &[&x], &format!("{path}.float"), attrs)?;
        let output = match (&inputs[0], graph.kind) {
            (Act::Quant(_, q), ExportKind::Int8) => Some(q.clone()),
            _ => None,
        };
        graph.finish(y, output, path)
    }
}
