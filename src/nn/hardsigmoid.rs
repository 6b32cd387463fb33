//! [`Hardsigmoid`]: PyTorch's `torch.nn.Hardsigmoid` in a quantizable model (MobileNetV3's
//! squeeze-excitation gate), which PyTorch's eager `convert` keeps as it is: on a quint8 tensor
//! it runs quantized hardsigmoid, whose output qparams are fixed.

use burn::module::Module;
use burn::tensor::Tensor;

use super::batch::Batch;
use super::layer::{QuantLayer, QuantOp, address_of};
use crate::Result;
use crate::int8::hardsigmoid::{HARDSIGMOID_OUTPUT, hardsigmoid};
use crate::int8::{Engine, PoolInputLayout, QParamsPt, QTensor};
use crate::onnx::proto::AttributeProto;
use crate::onnx::{Act, Builder, ExportKind};

/// `y = min(max(x + 3, 0), 6) / 6` elementwise (any shape), PyTorch's `nn.Hardsigmoid`.
///
/// It has no quantization of its own: `prepare` attaches nothing (as PyTorch's eager `prepare`
/// attaches no observer to it), it is ready for int8 as it is, and its int8 forward is
/// `F.hardsigmoid` on a quint8 tensor, with the fixed output scale `1/256` and zero-point 0
/// of both engines (see [`crate::int8::hardsigmoid`]). PyTorch's `prepare_qat` gives it a
/// `FixedQParamsFakeQuantize` with those qparams; this layer's float forward does not
/// fake-quantize yet.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::nn::Hardsigmoid;
///
/// let hs = Hardsigmoid::new();
/// let x = Tensor::<1>::from_floats([-4.0, 0.0, 1.5, 4.0], &Device::flex());
/// let y: Tensor<1> = hs.forward(x);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![0.0, 0.5, 0.75, 1.0]);
/// ```
#[derive(Module, Debug)]
pub struct Hardsigmoid {
    /// The int8 output's scale and zero-point: always [`HARDSIGMOID_OUTPUT`] (a field, so that
    /// the layer is not zero-sized and has an address of its own for the model's walk).
    #[module(skip)]
    pub output: QParamsPt,
}

impl Default for Hardsigmoid {
    fn default() -> Self {
        Hardsigmoid {
            output: HARDSIGMOID_OUTPUT,
        }
    }
}

impl Hardsigmoid {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hardsigmoid of `x` on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<D>, const D: usize>(&self, x: X) -> X {
        X::apply(self, vec![x])
    }
}

/// No quantization parameters of its own: nothing to prepare, convert or save, and ready for
/// int8 as it is.
impl QuantLayer for Hardsigmoid {
    fn kind(&self) -> &'static str {
        "Hardsigmoid"
    }

    fn is_converted(&self) -> bool {
        true
    }
}

impl<const D: usize> QuantOp<D> for Hardsigmoid {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "Hardsigmoid"
    }

    fn forward_float(&self, mut inputs: Vec<Tensor<D>>) -> Tensor<D> {
        // PyTorch's order of operations, for the same bits.
        inputs
            .remove(0)
            .add_scalar(3.0)
            .clamp(0.0, 6.0)
            .div_scalar(6.0)
    }

    /// The x86 engine's result on an NCHW-contiguous input; a model's batches run
    /// [`Self::forward_int8_in`] with their engine and memory format.
    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        hardsigmoid(inputs[0], Engine::X86, PoolInputLayout::Contiguous)
    }

    fn forward_int8_in(
        &self,
        inputs: &[&QTensor],
        engine: Engine,
        layout: PoolInputLayout,
    ) -> Result<QTensor> {
        hardsigmoid(inputs[0], engine, layout)
    }

    /// `[DQ →] HardSigmoid(α = 1/6, β = 0.5) [→ Q(1/256, 0)]`.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        let x = graph.float_input(&inputs[0], path)?;
        let output = match (&inputs[0], graph.kind) {
            (Act::Quant(..), ExportKind::Int8) => Some(graph.int8_output(path, self.output)?),
            _ => None,
        };
        let attrs = vec![
            AttributeProto::float("alpha", 1.0 / 6.0),
            AttributeProto::float("beta", 0.5),
        ];
        let y = graph.node("HardSigmoid", &[&x], &format!("{path}.float"), attrs)?;
        graph.finish(y, output, path)
    }
}
