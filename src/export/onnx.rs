//! ONNX export (opset 13, IR version 7) of any model written against the batch types, traced
//! through its own forward ([`super::trace_onnx`]), in three forms ([`ExportKind`]):
//!
//! - **int8** ([`ExportKind::Int8`]): a converted model as a standard QDQ graph. Activations are
//!   uint8 with the converted layers' scales and zero-points; every `Conv` / `Gemm` reads
//!   `DequantizeLinear` outputs of its quantized input, of its int8 weight (per-tensor, or
//!   per-channel with `axis = 0`) and of its int32 bias (`round(b / (s_in·s_w))`, scale
//!   `s_in·s_w`, zero-point 0), and its output goes through `QuantizeLinear` with the layer's
//!   output qparams. A fused ReLU is the output quantization's lower bound (its zero-point is 0),
//!   so `DQ → Conv → Q` is one `QLinearConv` for onnxruntime; a ReLU layer with another
//!   zero-point keeps an explicit `Relu`. The residual add is `DQ(a), DQ(b) → Add → Q`, the
//!   average pooling `DQ → GlobalAveragePool → Q` with the input's qparams (as PyTorch's
//!   quantized adaptive average pooling keeps them), then `DQ → Flatten → Q`, the classifier
//!   `Gemm` (`transB = 1`, weight `[out, in]`), and a last `DequantizeLinear` gives `logits`.
//! - **float** ([`ExportKind::Float`]): the float network (`Conv`, `BatchNormalization` where
//!   the layer still has its batch norm, `Relu` / `Clip(0, 6)`, `Add`, `GlobalAveragePool`,
//!   `Flatten`, `Gemm`), ignoring observers and fake-quants.
//! - **QDQ** ([`ExportKind::FakeQuant`]): a QAT model (after `prepare_qat`) as float ONNX with a
//!   `QuantizeLinear → DequantizeLinear` pair for every fake-quant, with its current scale and
//!   zero-point (the ones the forward applies once observers are disabled): int8 weights with
//!   `DequantizeLinear` (a QAT conv + BN is exported with BN folded from its running statistics,
//!   which is exactly its eval forward), float biases, and a `Clip` on the quantized tensor
//!   where a fake-quant's range is narrower than its type's (`reduce_range`). Every fake-quant
//!   is exported, enabled or not: the graph is the model as it will be deployed.
//!
//! The graph's input is `input` (float32, e.g. `[batch, 3, height, width]` with the channel
//! count fixed and the rest symbolic) and its output `logits` (float32, e.g. `[batch,
//! num_classes]`). Tensor and node names follow the model's module paths
//! (`blocks.3.depthwise`).

use std::path::Path;

use prost::Message;

use super::graph::{Act, ActQ, Builder, not_converted, raw};
use super::layer_parts::{
    Bias, LayerParts, Weight, float_parts, int8_conv_parts, int8_linear_parts, qat_conv_parts,
    qat_linear_parts,
};
use super::proto::{
    AttributeProto, DataType, DimensionValue, GraphProto, ModelProto, StringStringEntryProto,
    ValueInfoProto, onnx_opset,
};
use crate::int8::tensor::quantize_val;
use crate::nn::{
    Activation, BatchNorm2d, BinaryOp, ConvBnAct, FloatFunctional, LinearBnAct, QuantStub,
};
use crate::quant::observer::tensor_to_vec;
use crate::{Error, Result};

/// The ONNX opset the exporter writes (`ai.onnx` domain): per-axis `QuantizeLinear` /
/// `DequantizeLinear` need 13.
pub const OPSET: i64 = 13;
/// The ONNX IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
/// Name of the graph's input.
pub const INPUT_NAME: &str = "input";
/// Name of the graph's output.
pub const OUTPUT_NAME: &str = "logits";

/// Which form of the model to write; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// The converted model as a QDQ graph with int8 weights and int32 biases.
    Int8,
    /// The float network.
    Float,
    /// A QAT model: float network with Q/DQ pairs for its fake-quants.
    FakeQuant,
}

impl ExportKind {
    fn name(self) -> &'static str {
        match self {
            ExportKind::Int8 => "int8",
            ExportKind::Float => "float",
            ExportKind::FakeQuant => "qdq",
        }
    }
}

/// Writes `proto` to `path` (atomic write: the old file or the complete new one, never half of
/// it).
pub fn save_onnx(proto: &ModelProto, path: &Path) -> Result<()> {
    let bytes = proto.encode_to_vec();
    crate::io::atomic::write_atomic(path, |f| std::io::Write::write_all(f, &bytes))
}

/// The `ModelProto` around a recorded graph: its input and output value infos (`input` dims,
/// output name and dims) and the model's metadata (the export form, and `extra`).
pub(super) fn model_proto(
    graph: Builder,
    name: &str,
    (input_dims, output, output_dims): (Vec<DimensionValue>, &str, Vec<DimensionValue>),
    extra: Option<(&str, &str)>,
) -> ModelProto {
    let kind = graph.kind;
    let mut metadata = vec![entry("burn_qat.kind", kind.name())];
    metadata.extend(extra.map(|(k, v)| entry(k, v)));
    let graph = GraphProto {
        node: graph.nodes,
        name: Some(format!("{name}_{}", kind.name())),
        initializer: graph.initializers,
        doc_string: None,
        input: vec![ValueInfoProto::tensor(
            INPUT_NAME,
            DataType::Float,
            input_dims,
        )],
        output: vec![ValueInfoProto::tensor(output, DataType::Float, output_dims)],
        value_info: vec![],
    };
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![onnx_opset(OPSET)],
        producer_name: Some("burn-qat".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(format!(
            "{name} ({} form) exported by burn-qat",
            kind.name()
        )),
        graph: Some(graph),
        metadata_props: metadata,
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    }
}

/// Geometry of a convolution.
struct ConvGeometry {
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Builder {
    /// The `QuantStub` at `path` on the graph input: the input itself (float form), or its
    /// `QuantizeLinear` with the stub's converted qparams (int8) or fake-quant (QDQ).
    pub(super) fn quant_stub(&mut self, stub: &QuantStub, path: &str) -> Result<Act> {
        let q = match self.kind {
            ExportKind::Float => return Ok(Act::Float(INPUT_NAME.to_string())),
            ExportKind::Int8 => {
                let out = stub.int8.ok_or_else(|| not_converted(path))?;
                self.int8_output(path, out.qparams)?
            }
            ExportKind::FakeQuant => self
                .fake_quant_output(path, &stub.activation_post_process)?
                .ok_or_else(|| {
                    Error::Quant(format!(
                        "ONNX QDQ export: the model's QuantStub `{path}` has no fake-quant \
                         (prepare_qat the model first, or export it as float)"
                    ))
                })?,
        };
        let name = self.quantize(INPUT_NAME, &q, path)?;
        Ok(Act::Quant(name, q))
    }

    /// The output quantization of the `FloatFunctional` at `path`, `None` in float form.
    fn functional_output(&mut self, f: &FloatFunctional, path: &str) -> Result<Option<ActQ>> {
        match self.kind {
            ExportKind::Float => Ok(None),
            ExportKind::Int8 => {
                let out = f.int8.ok_or_else(|| not_converted(path))?;
                Ok(Some(self.int8_output(path, out.qparams)?))
            }
            ExportKind::FakeQuant => self.fake_quant_output(path, &f.activation_post_process),
        }
    }

    /// A `FloatFunctional` binary op: `DQ(a), DQ(b) → Add | Mul | MatMul [→ Relu] → Q`.
    pub(super) fn functional(
        &mut self,
        f: &FloatFunctional,
        path: &str,
        op: BinaryOp,
        inputs: &[Act],
    ) -> Result<Act> {
        let a = self.float_input(&inputs[0], path)?;
        let b = self.float_input(&inputs[1], path)?;
        let output = self.functional_output(f, path)?;
        let onnx_op = match op {
            BinaryOp::Add | BinaryOp::AddRelu => "Add",
            BinaryOp::Mul => "Mul",
            BinaryOp::Matmul => "MatMul",
        };
        let mut y = self.node(onnx_op, &[&a, &b], &format!("{path}.float"), vec![])?;
        if op == BinaryOp::AddRelu {
            y = self.node("Relu", &[&y], &format!("{path}.relu"), vec![])?;
        }
        self.finish(y, output, path)
    }

    /// `FloatFunctional.cat`: `DQ(x₁) … DQ(xₙ) → Concat(axis) → Q`.
    pub(super) fn concat(
        &mut self,
        f: &FloatFunctional,
        path: &str,
        axis: usize,
        inputs: &[Act],
    ) -> Result<Act> {
        if inputs.is_empty() {
            return Err(Error::Quant(format!(
                "ONNX export: `{path}` concatenates no tensors"
            )));
        }
        let floats = inputs
            .iter()
            .map(|x| self.float_input(x, path))
            .collect::<Result<Vec<_>>>()?;
        let output = self.functional_output(f, path)?;
        let names: Vec<&str> = floats.iter().map(String::as_str).collect();
        let y = self.node(
            "Concat",
            &names,
            &format!("{path}.float"),
            vec![AttributeProto::int("axis", axis as i64)],
        )?;
        self.finish(y, output, path)
    }

    /// `flatten(adaptive_avg_pool2d(x, 1), 1)`: on int8 activations
    /// `DQ → GlobalAveragePool → Q → DQ → Flatten → Q`, keeping the input's qparams.
    pub(super) fn pool_flatten(&mut self, x: &Act, suffix: &str) -> Result<Act> {
        let pool = &format!("avgpool{suffix}");
        let xf = self.float_input(x, pool)?;
        let pooled = self.node(
            "GlobalAveragePool",
            &[&xf],
            &format!("{pool}.float"),
            vec![],
        )?;
        let pooled = match (x, self.kind) {
            (Act::Quant(_, q), ExportKind::Int8) => {
                let name = self.quantize(&pooled, q, pool)?;
                Act::Quant(name, q.clone())
            }
            _ => Act::Float(pooled),
        };
        let flatten = &format!("flatten{suffix}");
        let pf = self.float_input(&pooled, flatten)?;
        let flat = self.node(
            "Flatten",
            &[&pf],
            &format!("{flatten}.float"),
            vec![AttributeProto::int("axis", 1)],
        )?;
        match pooled {
            Act::Quant(_, q) => {
                let name = self.quantize(&flat, &q, flatten)?;
                Ok(Act::Quant(name, q))
            }
            Act::Float(_) => Ok(Act::Float(flat)),
        }
    }

    pub(super) fn conv(&mut self, layer: &ConvBnAct, path: &str, x: &Act) -> Result<Act> {
        let spec = crate::convert::conv_spec(layer)?;
        let geometry = ConvGeometry {
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
        };
        let parts = match self.kind {
            ExportKind::Int8 => {
                let int8 = layer.int8.as_ref().ok_or_else(|| not_converted(path))?;
                let output = self.int8_output(path, int8.output_qparams())?;
                int8_conv_parts(int8, output)
            }
            ExportKind::Float => float_parts(
                layer.conv.weight.val().dims().to_vec(),
                tensor_to_vec(layer.conv.weight.val()),
                layer.conv.bias.as_ref().map(|b| tensor_to_vec(b.val())),
                layer.bn.as_ref(),
                layer.activation,
            ),
            ExportKind::FakeQuant => {
                let output = self.fake_quant_output(path, &layer.activation_post_process)?;
                qat_conv_parts(layer, path, output)?
            }
        };
        let kernel: Vec<i64> = parts.shape[2..].iter().map(|&k| k as i64).collect();
        let attrs = |g: &ConvGeometry| {
            let (s, p) = (g.stride as i64, g.padding as i64);
            vec![
                AttributeProto::ints("dilations", &[1, 1]),
                AttributeProto::int("group", g.groups as i64),
                AttributeProto::ints("kernel_shape", &kernel),
                AttributeProto::ints("pads", &[p, p, p, p]),
                AttributeProto::ints("strides", &[s, s]),
            ]
        };
        let attrs = attrs(&geometry);
        self.layer("Conv", path, x, parts, attrs)
    }

    pub(super) fn linear(&mut self, layer: &LinearBnAct, path: &str, x: &Act) -> Result<Act> {
        let parts = match self.kind {
            ExportKind::Int8 => {
                let int8 = layer.int8.as_ref().ok_or_else(|| not_converted(path))?;
                let output = self.int8_output(path, int8.output_qparams())?;
                int8_linear_parts(int8, layer.activation, output)
            }
            ExportKind::Float => {
                // Burn stores [in, out]; Gemm with transB reads [out, in].
                let w = layer.linear.weight.val().transpose();
                float_parts(
                    w.dims().to_vec(),
                    tensor_to_vec(w),
                    layer.linear.bias.as_ref().map(|b| tensor_to_vec(b.val())),
                    layer.bn.as_ref(),
                    layer.activation,
                )
            }
            ExportKind::FakeQuant => {
                let output = self.fake_quant_output(path, &layer.activation_post_process)?;
                qat_linear_parts(layer, path, output)?
            }
        };
        self.layer(
            "Gemm",
            path,
            x,
            parts,
            vec![AttributeProto::int("transB", 1)],
        )
    }

    /// `[DQ] → Conv/Gemm → [BatchNormalization] → [activation] → [Q]` for one layer.
    fn layer(
        &mut self,
        op: &str,
        path: &str,
        x: &Act,
        parts: LayerParts<'_>,
        attrs: Vec<AttributeProto>,
    ) -> Result<Act> {
        let xf = self.float_input(x, path)?;
        let out_channels = parts.shape[0];
        let per_channel = matches!(
            parts.weight,
            Weight::Int8 {
                per_channel: true,
                ..
            }
        );
        let (weight, weight_scales) = match parts.weight {
            Weight::Float(w) => (
                self.init_f32(format!("{path}.weight"), &parts.shape, &w)?,
                None,
            ),
            Weight::Int8 {
                data,
                scales,
                zero_points,
                per_channel,
            } => {
                let q = self.initializer(
                    format!("{path}.weight_quantized"),
                    DataType::Int8,
                    &parts.shape,
                    data.iter().map(|&v| v as u8).collect(),
                )?;
                let s =
                    self.init_params_f32(format!("{path}.weight_scale"), &scales, per_channel)?;
                let z = self.init_zero_points(
                    format!("{path}.weight_zero_point"),
                    DataType::Int8,
                    &zero_points,
                    per_channel,
                )?;
                let axis = per_channel.then(|| AttributeProto::int("axis", 0));
                let w = self.node(
                    "DequantizeLinear",
                    &[&q, &s, &z],
                    &format!("{path}.weight"),
                    axis.into_iter().collect(),
                )?;
                (w, Some(scales))
            }
        };
        let bias = match parts.bias {
            Bias::None => None,
            Bias::Float(b) => Some(self.init_f32(format!("{path}.bias"), &[b.len()], &b)?),
            Bias::Int32(b) => {
                let (Act::Quant(_, xq), Some(w_scales)) = (x, &weight_scales) else {
                    return Err(Error::Quant(format!(
                        "ONNX export: `{path}` needs a quantized input and weight for an int32 bias"
                    )));
                };
                // qnnpack's QuantizeBias: scale s_w·s_in (f32), round(b · (1/scale)), zp 0.
                let scales: Vec<f32> = (0..out_channels)
                    .map(|c| w_scales[if per_channel { c } else { 0 }] * xq.qparams.scale)
                    .collect();
                let q: Vec<i32> = b
                    .iter()
                    .zip(&scales)
                    .map(|(&v, &s)| {
                        quantize_val(v, 1.0f32 / s, 0, i32::MIN as i64, i32::MAX as i64) as i32
                    })
                    .collect();
                let qn = self.initializer(
                    format!("{path}.bias_quantized"),
                    DataType::Int32,
                    &[q.len()],
                    raw(&q, i32::to_le_bytes),
                )?;
                let s = self.init_params_f32(format!("{path}.bias_scale"), &scales, per_channel)?;
                let z = self.init_zero_points(
                    format!("{path}.bias_zero_point"),
                    DataType::Int32,
                    &vec![0; out_channels],
                    per_channel,
                )?;
                let axis = per_channel.then(|| AttributeProto::int("axis", 0));
                Some(self.node(
                    "DequantizeLinear",
                    &[&qn, &s, &z],
                    &format!("{path}.bias"),
                    axis.into_iter().collect(),
                )?)
            }
        };
        let mut inputs = vec![xf.as_str(), weight.as_str()];
        if let Some(b) = &bias {
            inputs.push(b);
        }
        let mut y = self.node(op, &inputs, &format!("{path}.{}", op.to_lowercase()), attrs)?;
        if let Some(bn) = parts.bn {
            y = self.batch_norm(bn, path, &y)?;
        }
        // A ReLU whose output quantization starts at its zero-point is that quantization's
        // lower bound: no node (onnxruntime then fuses DQ → Conv → Q into QLinearConv).
        let relu_folded = parts.output.as_ref().is_some_and(|q| {
            let lo = q.clip.map_or(q.dtype.bounds().0, |c| c.0);
            q.qparams.zero_point as i64 == lo
        });
        y = match parts.activation {
            Activation::Identity => y,
            Activation::Relu if relu_folded => y,
            Activation::Relu => self.node("Relu", &[&y], &format!("{path}.relu"), vec![])?,
            Activation::Relu6 => {
                let lo = self.init_f32(format!("{path}.relu6_min"), &[], &[0.0])?;
                let hi = self.init_f32(format!("{path}.relu6_max"), &[], &[6.0])?;
                self.node("Clip", &[&y, &lo, &hi], &format!("{path}.relu6"), vec![])?
            }
        };
        self.finish(y, parts.output, path)
    }

    fn batch_norm(&mut self, bn: &BatchNorm2d, path: &str, x: &str) -> Result<String> {
        let c = bn.weight.val().dims()[0];
        let gamma = self.init_f32(
            format!("{path}.bn.weight"),
            &[c],
            &tensor_to_vec(bn.weight.val()),
        )?;
        let beta = self.init_f32(
            format!("{path}.bn.bias"),
            &[c],
            &tensor_to_vec(bn.bias.val()),
        )?;
        let mean = self.init_f32(
            format!("{path}.bn.running_mean"),
            &[c],
            &tensor_to_vec(bn.running_mean()),
        )?;
        let var = self.init_f32(
            format!("{path}.bn.running_var"),
            &[c],
            &tensor_to_vec(bn.running_var()),
        )?;
        self.node(
            "BatchNormalization",
            &[x, &gamma, &beta, &mean, &var],
            &format!("{path}.bn"),
            vec![AttributeProto::float("epsilon", bn.eps as f32)],
        )
    }
}
