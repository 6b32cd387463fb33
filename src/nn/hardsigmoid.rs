//! [`Hardsigmoid`]: PyTorch's `torch.nn.Hardsigmoid` in a quantizable model (MobileNetV3's
//! squeeze-excitation gate), which PyTorch's eager `convert` keeps as it is: on a quint8 tensor
//! it runs quantized hardsigmoid, whose output qparams are fixed. In QAT its output is
//! fake-quantized with those qparams (PyTorch's `FixedQParamsFakeQuantize`).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::batch::Batch;
use super::layer::{PrepareMode, QuantLayer, QuantOp, address_of};
use crate::error::StageProblem;
use crate::int8::QParamsPt;
use crate::int8::hardsigmoid::{HARDSIGMOID_OUTPUT, hardsigmoid};
use crate::int8::{Engine, PoolInputLayout, QTensor};
use crate::onnx::proto::AttributeProto;
use crate::onnx::{Act, Builder, ExportKind};
use crate::quant::{FixedQParamsFakeQuantize, QConfig, QuantDtype};
use crate::{Error, Result};

/// `y = min(max(x + 3, 0), 6) / 6` elementwise (any shape), PyTorch's `nn.Hardsigmoid`.
///
/// Its output qparams are fixed, so it has no observer: `prepare` attaches nothing (as
/// PyTorch's eager `prepare` of a model in eval mode), and `prepare_qat` attaches a
/// [`FixedQParamsFakeQuantize`] of scale `1/256`, zero-point 0, quint8 `[0, 255]` (PyTorch's
/// `_get_special_act_post_process` for a module in training mode), which the QAT switches
/// reach. It is ready for int8 as it is, and its int8 forward is `F.hardsigmoid` on a quint8
/// tensor, with that scale and zero-point on both engines (see [`crate::int8::hardsigmoid`]);
/// the fake-quant is not used there, as PyTorch's converted module keeps it but never runs it
/// on a quantized tensor.
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
    /// The QAT output fake-quant (PyTorch's attribute name), attached by `prepare_qat`.
    pub activation_post_process: Option<FixedQParamsFakeQuantize>,
    /// The int8 output's scale and zero-point: always [`HARDSIGMOID_OUTPUT`] (a field, so that
    /// the layer is not zero-sized and has an address of its own for the model's walk).
    #[module(skip)]
    pub output: QParamsPt,
}

impl Default for Hardsigmoid {
    fn default() -> Self {
        Hardsigmoid {
            activation_post_process: None,
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

/// Fixed output qparams: nothing to observe, convert or save in the int8 state, and ready for
/// int8 as it is; QAT attaches the fixed-qparams fake-quant.
impl QuantLayer for Hardsigmoid {
    fn kind(&self) -> &'static str {
        "Hardsigmoid"
    }

    fn prepare(&mut self, _: &QConfig, mode: PrepareMode, device: &Device) -> Result<()> {
        if self.activation_post_process.is_some() {
            return Err(Error::stage(StageProblem::AlreadyPrepared));
        }
        if mode == PrepareMode::Qat {
            self.activation_post_process = Some(FixedQParamsFakeQuantize::range_0to1(device));
        }
        Ok(())
    }

    /// Drops the QAT fake-quant, which the int8 forward never uses (PyTorch's converted
    /// model keeps a plain `nn.Hardsigmoid`).
    fn strip_float(&mut self) {
        self.activation_post_process = None;
    }

    fn for_each_fixed_fake_quant(&mut self, f: &mut dyn FnMut(&mut FixedQParamsFakeQuantize)) {
        if let Some(fq) = &mut self.activation_post_process {
            f(fq);
        }
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
        let y = inputs
            .remove(0)
            .add_scalar(3.0)
            .clamp(0.0, 6.0)
            .div_scalar(6.0);
        match &self.activation_post_process {
            Some(fq) => fq.forward(y),
            None => y,
        }
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

    /// `[DQ →] HardSigmoid(α = 1/6, β = 0.5) [→ Q(1/256, 0)]`: Q/DQ on int8 inputs, and in
    /// the QDQ form once QAT attached the fake-quant.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        let x = graph.float_input(&inputs[0], path)?;
        let output = match (&inputs[0], graph.kind, &self.activation_post_process) {
            (Act::Quant(..), ExportKind::Int8, _) => Some(graph.int8_output(path, self.output)?),
            (_, ExportKind::FakeQuant, Some(fq)) => {
                let q = QParamsPt::new(self.output.scale, self.output.zero_point)?;
                Some(graph.act_q(path, q, QuantDtype::QUInt8, fq.quant_range())?)
            }
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
