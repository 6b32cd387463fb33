//! [`Hardswish`]: PyTorch's `torch.nn.Hardswish` in a quantizable model, with its output
//! post-process, converting to `torch.ao.nn.quantized.Hardswish(scale, zero_point)`.

use burn::module::Module;
use burn::tensor::Tensor;

use super::batch::Batch;
use super::layer::{QuantOp, address_of};
use super::output_layer::impl_output_layer;
use super::post_process::{ActivationPostProcess, PostProcess};
use super::qbatch::QuantizedOutput;
use crate::error::StageProblem;
use crate::int8::hardswish::Int8Hardswish;
use crate::int8::{Engine, PoolInputLayout, QParamsPt, QTensor};
use crate::onnx::graph::not_converted;
use crate::onnx::proto::AttributeProto;
use crate::onnx::{Act, Builder, ExportKind};
use crate::{Error, Result};

/// `y = x · relu6(x + 3) / 6` elementwise (any shape, `[N, C, H, W]` or `[N, F]`), then
/// `activation_post_process`: PyTorch's `nn.Hardswish`. `prepare` attaches an observer to its
/// output (`prepare_qat` a fake-quant), as PyTorch's eager mode does; `convert` gives it that
/// output's scale and zero-point, and the int8 forward is `torch.ao.nn.quantized.Hardswish`
/// (`quantized::hardswish`, each engine's arithmetic: see [`crate::int8::hardswish`]).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::nn::Hardswish;
///
/// let hs = Hardswish::new();
/// let x = Tensor::<1>::from_floats([-4.0, 0.0, 1.0, 4.0], &Device::flex());
/// let y: Tensor<1> = hs.forward(x);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![0.0, 0.0, 4.0 / 6.0, 4.0]);
/// ```
#[derive(Module, Debug, Default)]
pub struct Hardswish {
    /// Applied to the output (PyTorch's attribute name).
    pub activation_post_process: ActivationPostProcess,
    /// The output scale and zero-point of the converted layer.
    #[module(skip)]
    pub int8: Option<QuantizedOutput>,
}

impl Hardswish {
    /// A float-mode layer (identity post-process).
    pub fn new() -> Self {
        Self::default()
    }

    /// Hardswish of `x` on any batch type (float, int8, traced for ONNX).
    pub fn forward<X: Batch<D>, const D: usize>(&self, x: X) -> X {
        X::apply(self, vec![x])
    }

    fn int8_op(&self) -> Result<Int8Hardswish> {
        let out = self.int8.ok_or(Error::stage(StageProblem::NotConverted))?;
        Ok(Int8Hardswish::new(out.qparams, out.engine))
    }
}

impl<const D: usize> QuantOp<D> for Hardswish {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "Hardswish"
    }

    fn forward_float(&self, mut inputs: Vec<Tensor<D>>) -> Tensor<D> {
        let x = inputs.remove(0);
        // PyTorch's order of operations (`x * min(max(x + 3, 0), 6) / 6`), for the same bits.
        let y = x.clone() * x.add_scalar(3.0).clamp(0.0, 6.0);
        self.activation_post_process.post_process(y.div_scalar(6.0))
    }

    /// As PyTorch on an NCHW-contiguous input; a model's batches run
    /// [`Self::forward_int8_in`] with the memory format PyTorch would have.
    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        self.int8_op()?
            .forward(inputs[0], PoolInputLayout::Contiguous)
    }

    fn forward_int8_in(
        &self,
        inputs: &[&QTensor],
        _: Engine,
        layout: PoolInputLayout,
    ) -> Result<QTensor> {
        self.int8_op()?.forward(inputs[0], layout)
    }

    /// `[DQ →] HardSigmoid(α = 1/6, β = 0.5) → Mul(x) [→ Q]`, as PyTorch exports hardswish
    /// before opset 14 (which first has `HardSwish`).
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        let x = graph.float_input(&inputs[0], path)?;
        let output = match graph.kind {
            ExportKind::Float => None,
            ExportKind::Int8 => {
                let out = self.int8.ok_or_else(|| not_converted(path))?;
                Some(graph.int8_output(path, out.qparams)?)
            }
            ExportKind::FakeQuant => self.activation_post_process.onnx_output(graph, path)?,
        };
        let attrs = vec![
            AttributeProto::float("alpha", 1.0 / 6.0),
            AttributeProto::float("beta", 0.5),
        ];
        let gate = graph.node("HardSigmoid", &[&x], &format!("{path}.gate"), attrs)?;
        let y = graph.node("Mul", &[&x, &gate], &format!("{path}.float"), vec![])?;
        graph.finish(y, output, path)
    }
}

// `nnq.Hardswish.from_float`: the output observer's qparams; one that saw no data gives
// PyTorch's defaults for an empty observer, scale 1 and zero-point 0.
impl_output_layer!(Hardswish, "Hardswish", |_| QParamsPt::new(1.0, 0), None);
