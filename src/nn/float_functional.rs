//! `FloatFunctional`: tensor operations whose output a quantized model must track, PyTorch's
//! `torch.ao.nn.quantized.FloatFunctional`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::batch::{Batch, BinaryOp};
use super::layer::{QuantOp, address_of};
use super::output_layer::impl_output_layer;
use super::post_process::{ActivationPostProcess, PostProcess};
use super::qbatch::QuantizedOutput;
use crate::error::StageProblem;
use crate::int8::{Engine, Int8Add, Int8Cat, Int8Mul, PoolInputLayout, QParamsPt, QTensor};
use crate::onnx::graph::not_converted;
use crate::onnx::proto::AttributeProto;
use crate::onnx::{Act, ActQ, Builder, ExportKind};
use crate::{Error, Result};

/// Residual adds, products and concatenations through a module, so that `prepare` can observe
/// and `prepare_qat` can fake-quantize their outputs, and `convert` can give them their own
/// output scale and zero-point. Every method computes the float result, then applies
/// `activation_post_process` (identity until the model is prepared).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::nn::FloatFunctional;
///
/// let device = Device::flex();
/// let skip_add = FloatFunctional::new();
/// let x = Tensor::<4>::ones([1, 2, 3, 3], &device);
/// let y = skip_add.add(x.clone(), x); // a residual connection: `x + conv(x)` in a real model
/// ```
#[derive(Module, Debug)]
pub struct FloatFunctional<P: PostProcess = ActivationPostProcess> {
    /// Applied to every result (PyTorch's attribute name).
    pub activation_post_process: P,
    /// The output scale and zero-point of the converted model (`QFunctional`).
    #[module(skip)]
    pub int8: Option<QuantizedOutput>,
}

impl FloatFunctional {
    /// A float-mode `FloatFunctional` (identity post-process).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Default for FloatFunctional {
    fn default() -> Self {
        Self {
            activation_post_process: ActivationPostProcess::default(),
            int8: None,
        }
    }
}

impl<P: PostProcess> FloatFunctional<P> {
    /// A `FloatFunctional` with a custom post-process.
    pub fn with_post_process(post_process: P) -> Self {
        Self {
            activation_post_process: post_process,
            int8: None,
        }
    }

    fn binary<X: Batch<D>, const D: usize>(&self, op: BinaryOp, x: X, y: X) -> X {
        X::apply(
            &Functional {
                f: self,
                op: FunctionalOp::Binary(op),
            },
            vec![x, y],
        )
    }

    /// `x + y`.
    pub fn add<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        self.binary(BinaryOp::Add, x, y)
    }

    /// `relu(x + y)` (one quantized op after convert).
    pub fn add_relu<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        self.binary(BinaryOp::AddRelu, x, y)
    }

    /// `x * y`.
    pub fn mul<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        self.binary(BinaryOp::Mul, x, y)
    }

    /// `x + c`. PyTorch does not observe this one: adding a scalar keeps the scale and shifts
    /// the zero-point, so the post-process is not applied.
    pub fn add_scalar<const D: usize>(&self, x: Tensor<D>, c: f64) -> Tensor<D> {
        x.add_scalar(c)
    }

    /// `x * c`. Not observed, as in PyTorch: the scale is multiplied instead.
    pub fn mul_scalar<const D: usize>(&self, x: Tensor<D>, c: f64) -> Tensor<D> {
        x.mul_scalar(c)
    }

    /// Concatenation along `dim`.
    pub fn cat<X: Batch<D>, const D: usize>(&self, xs: Vec<X>, dim: usize) -> X {
        X::apply(
            &Functional {
                f: self,
                op: FunctionalOp::Cat(dim),
            },
            xs,
        )
    }

    /// Matrix product (batched over leading dimensions).
    pub fn matmul<X: Batch<D>, const D: usize>(&self, x: X, y: X) -> X {
        self.binary(BinaryOp::Matmul, x, y)
    }
}

/// Which operation a [`FloatFunctional`] call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FunctionalOp {
    Binary(BinaryOp),
    /// Concatenation along a dimension.
    Cat(usize),
}

/// One call of a `FloatFunctional`: the module (whose address the walk lists) and its op.
struct Functional<'a, P: PostProcess> {
    f: &'a FloatFunctional<P>,
    op: FunctionalOp,
}

impl<P: PostProcess> Functional<'_, P> {
    /// The output quantization of the call in `graph`'s form, `None` in float form.
    fn onnx_output(&self, graph: &mut Builder, path: &str) -> Result<Option<ActQ>> {
        let prepared = self.f.activation_post_process.onnx_prepared();
        match graph.layer_form(path, prepared, self.f.int8.is_some())? {
            ExportKind::Float => Ok(None),
            ExportKind::Int8 => {
                let out = self.f.int8.ok_or_else(|| not_converted(path))?;
                Ok(Some(graph.int8_output(path, out.qparams)?))
            }
            ExportKind::FakeQuant => self.f.activation_post_process.onnx_output(graph, path),
        }
    }
}

impl<P: PostProcess, const D: usize> QuantOp<D> for Functional<'_, P> {
    fn layer_address(&self) -> usize {
        address_of(self.f)
    }

    fn op_kind(&self) -> &'static str {
        "FloatFunctional"
    }

    fn forward_float(&self, inputs: Vec<Tensor<D>>) -> Tensor<D> {
        let z = match self.op {
            FunctionalOp::Cat(dim) => Tensor::cat(inputs, dim),
            FunctionalOp::Binary(op) => {
                let [x, y]: [Tensor<D>; 2] = inputs.try_into().expect("binary ops take two inputs");
                match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::AddRelu => relu(x + y),
                    BinaryOp::Mul => x * y,
                    BinaryOp::Matmul => x.matmul(y),
                }
            }
        };
        self.f.activation_post_process.post_process(z)
    }

    /// As PyTorch on NCHW-contiguous inputs; a model's batches run [`Self::forward_int8_in`]
    /// with the memory format PyTorch would hold the inputs in.
    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        QuantOp::<D>::forward_int8_in(self, inputs, Engine::X86, PoolInputLayout::Contiguous)
    }

    /// `quantized::add`, `add_relu`, `mul` (broadcasting) or `cat` with the call's output
    /// qparams (see [`crate::int8::add`], [`crate::int8::mul`], [`crate::int8::cat`]); cat
    /// takes PyTorch's NHWC fast path when `layout` (every input's) is channels-last.
    fn forward_int8_in(
        &self,
        inputs: &[&QTensor],
        _: Engine,
        layout: PoolInputLayout,
    ) -> Result<QTensor> {
        let out = self
            .f
            .int8
            .ok_or(Error::stage(StageProblem::NotConverted))?;
        let pair = || -> Result<[&QTensor; 2]> {
            inputs.try_into().map_err(|_| {
                Error::Shape(format!(
                    "a binary FloatFunctional op got {} inputs",
                    inputs.len()
                ))
            })
        };
        match self.op {
            FunctionalOp::Binary(op @ (BinaryOp::Add | BinaryOp::AddRelu)) => {
                let [a, b] = pair()?;
                Int8Add::new(out.qparams, op == BinaryOp::AddRelu, out.engine).forward(a, b)
            }
            FunctionalOp::Binary(BinaryOp::Mul) => {
                let [a, b] = pair()?;
                Int8Mul::new(out.qparams, false).forward(a, b)
            }
            FunctionalOp::Cat(dim) => Int8Cat::new(out.qparams).forward(
                inputs,
                dim,
                layout == PoolInputLayout::ChannelsLast,
            ),
            FunctionalOp::Binary(BinaryOp::Matmul) => Err(Error::Quant(
                "the int8 path has no quantized matmul (add, add_relu, mul and cat only)".into(),
            )),
        }
    }

    /// PyTorch's output memory format: cat's is channels-last where every input is (both of its
    /// paths); a binary op's is its first input's `suggest_memory_format()`, which is NCHW for
    /// an `[N, C, 1, 1]` input (the SE block's `mul(scale, x)`).
    fn int8_output_layout(
        &self,
        inputs: &[&QTensor],
        layouts: &[PoolInputLayout],
    ) -> PoolInputLayout {
        let all_cl = layouts.iter().all(|&l| l == PoolInputLayout::ChannelsLast);
        match (self.op, inputs.first(), layouts.first()) {
            (FunctionalOp::Cat(_), ..) if all_cl && !layouts.is_empty() => {
                PoolInputLayout::ChannelsLast
            }
            (FunctionalOp::Binary(_), Some(x), Some(&layout))
                if !matches!(x.shape(), [_, _, 1, 1]) =>
            {
                layout
            }
            _ => PoolInputLayout::Contiguous,
        }
    }

    /// `DQ(a), DQ(b) → Add | Mul | MatMul [→ Relu] → Q`, or
    /// `DQ(x₁) … DQ(xₙ) → Concat(axis) → Q`.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        if inputs.is_empty() {
            return Err(Error::Quant(format!(
                "ONNX export: `{path}` concatenates no tensors"
            )));
        }
        let floats = inputs
            .iter()
            .map(|x| graph.float_input(x, path))
            .collect::<Result<Vec<_>>>()?;
        let output = self.onnx_output(graph, path)?;
        let names: Vec<&str> = floats.iter().map(String::as_str).collect();
        let float_out = format!("{path}.float");
        let y = match self.op {
            FunctionalOp::Cat(axis) => graph.node(
                "Concat",
                &names,
                &float_out,
                vec![AttributeProto::int("axis", axis as i64)],
            )?,
            FunctionalOp::Binary(op) => {
                let onnx_op = match op {
                    BinaryOp::Add | BinaryOp::AddRelu => "Add",
                    BinaryOp::Mul => "Mul",
                    BinaryOp::Matmul => "MatMul",
                };
                let y = graph.node(onnx_op, &names, &float_out, vec![])?;
                match op {
                    BinaryOp::AddRelu => {
                        graph.node("Relu", &[&y], &format!("{path}.relu"), vec![])?
                    }
                    _ => y,
                }
            }
        };
        graph.finish(y, output, path)
    }

    fn output_channels(&self, inputs: &[Option<usize>]) -> Option<usize> {
        match self.op {
            FunctionalOp::Cat(1) => inputs.iter().copied().sum(),
            _ => inputs.first().copied().flatten(),
        }
    }
}

// `QFunctional.from_float`. An op that never ran (torchvision's `skip_add` in blocks without a
// residual connection) gets PyTorch's defaults for an empty observer, scale 1 and zero-point 0.
impl_output_layer!(
    FloatFunctional,
    "FloatFunctional",
    |_| QParamsPt::new(1.0, 0),
    None
);
