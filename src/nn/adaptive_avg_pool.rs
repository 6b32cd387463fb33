//! [`AdaptiveAvgPool2d`]: global average pooling that keeps the spatial dims, PyTorch's
//! `torch.nn.AdaptiveAvgPool2d(1)` (MobileNetV3's squeeze-excitation `avgpool`), which a
//! quantized model keeps as it is: on a quint8 tensor it runs quantized `adaptive_avg_pool2d`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::module::adaptive_avg_pool2d;

use super::batch::Batch;
use super::layer::{QuantLayer, QuantOp, address_of};
use crate::Result;
use crate::int8::pool::adaptive_avg_pool2d_1x1;
use crate::int8::{Engine, PoolInputLayout, QTensor};
use crate::onnx::{Act, Builder, ExportKind};

/// `y[n, c, 0, 0] = mean over (h, w) of x[n, c, h, w]`: `[N, C, H, W]` → `[N, C, 1, 1]`,
/// PyTorch's `nn.AdaptiveAvgPool2d(1)`.
///
/// It has no quantization of its own: `prepare` attaches nothing (as PyTorch's eager mode
/// attaches no observer to it), it is ready for int8 as it is, and its int8 forward keeps the
/// input's scale and zero-point (`quantized::adaptive_avg_pool2d`, whose rounding depends on
/// the input's memory format and the engine: see [`crate::int8::pool`]).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::nn::AdaptiveAvgPool2d;
///
/// let pool = AdaptiveAvgPool2d::new();
/// let x = Tensor::<4>::ones([2, 3, 5, 4], &Device::flex());
/// assert_eq!(pool.forward(x).dims(), [2, 3, 1, 1]);
/// ```
#[derive(Module, Debug, Default)]
pub struct AdaptiveAvgPool2d {
    /// A field, so that the layer is not zero-sized and has an address of its own for the
    /// model's walk.
    #[module(skip)]
    _address: u8,
}

impl AdaptiveAvgPool2d {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Average pooling of `x` to 1×1 on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<4>>(&self, x: X) -> X {
        X::apply(self, vec![x])
    }
}

/// No quantization parameters of its own: nothing to prepare, convert or save, and ready for
/// int8 as it is.
impl QuantLayer for AdaptiveAvgPool2d {
    fn kind(&self) -> &'static str {
        "AdaptiveAvgPool2d"
    }

    fn is_converted(&self) -> bool {
        true
    }
}

impl QuantOp<4> for AdaptiveAvgPool2d {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "AdaptiveAvgPool2d"
    }

    fn forward_float(&self, mut inputs: Vec<Tensor<4>>) -> Tensor<4> {
        adaptive_avg_pool2d(inputs.remove(0), [1, 1])
    }

    /// The x86 engine on an NCHW-contiguous input; a model's batches run
    /// [`Self::forward_int8_in`] with their engine and memory format.
    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        adaptive_avg_pool2d_1x1(inputs[0], Engine::X86, PoolInputLayout::Contiguous)
    }

    fn forward_int8_in(
        &self,
        inputs: &[&QTensor],
        engine: Engine,
        layout: PoolInputLayout,
    ) -> Result<QTensor> {
        adaptive_avg_pool2d_1x1(inputs[0], engine, layout)
    }

    /// `GlobalAveragePool`; on int8 activations `DQ → GlobalAveragePool → Q` with the input's
    /// qparams.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        let x = graph.float_input(&inputs[0], path)?;
        let y = graph.node("GlobalAveragePool", &[&x], &format!("{path}.float"), vec![])?;
        let output = match (&inputs[0], graph.kind) {
            (Act::Quant(_, q), ExportKind::Int8) => Some(q.clone()),
            _ => None,
        };
        graph.finish(y, output, path)
    }
}
