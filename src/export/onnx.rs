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

use std::collections::HashSet;
use std::path::Path;

use burn::module::Param;
use prost::Message;

use super::proto::{
    AttributeProto, DataType, DimensionValue, GraphProto, ModelProto, NodeProto,
    StringStringEntryProto, TensorProto, ValueInfoProto, onnx_opset,
};
use crate::int8::tensor::quantize_val;
use crate::int8::{Int8Conv2d, Int8Linear, QParamsPt, WeightQParams};
use crate::nn::{
    Activation, ActivationPostProcess, BatchNorm2d, BinaryOp, ConvBnAct, FloatFunctional, Fusion,
    LinearBnAct, QuantStub,
};
use crate::quant::observer::tensor_to_vec;
use crate::quant::{FakeQuantize, QuantDtype};
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

/// Quantization of an activation: the initializers holding its scale and zero-point and their
/// values, and the range a fake-quant clamps to.
#[derive(Debug, Clone)]
pub(super) struct ActQ {
    scale: String,
    zero_point: String,
    qparams: QParamsPt,
    dtype: QuantDtype,
    /// `(quant_min, quant_max)` when narrower than the dtype's bounds.
    clip: Option<(i64, i64)>,
}

/// A value flowing between layers: a float tensor, or a quantized one with its qparams.
#[derive(Debug, Clone)]
pub(super) enum Act {
    Float(String),
    Quant(String, ActQ),
}

/// The weight of a conv / linear layer as written to the graph.
enum Weight {
    Float(Vec<f32>),
    Int8 {
        data: Vec<i8>,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        per_channel: bool,
    },
}

/// The bias of a conv / linear layer as written to the graph.
enum Bias {
    None,
    Float(Vec<f32>),
    /// Float values, quantized to int32 with the input scale at emission.
    Int32(Vec<f32>),
}

/// Everything the graph needs about one conv / linear layer, whatever the export form.
struct LayerParts<'a> {
    weight: Weight,
    shape: Vec<usize>,
    bias: Bias,
    bn: Option<&'a BatchNorm2d>,
    activation: Activation,
    output: Option<ActQ>,
}

/// Geometry of a convolution.
struct ConvGeometry {
    stride: usize,
    padding: usize,
    groups: usize,
}

pub(super) struct Builder {
    kind: ExportKind,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: HashSet<String>,
}

fn raw<T: Copy, const N: usize>(data: &[T], bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    data.iter().flat_map(|&v| bytes(v)).collect()
}

pub(super) fn not_converted(path: &str) -> Error {
    Error::Quant(format!(
        "cannot export the int8 model to ONNX: `{path}` has no int8 form (convert the model or \
         load an int8 checkpoint first)"
    ))
}

impl Builder {
    pub(super) fn new(kind: ExportKind) -> Self {
        Builder {
            kind,
            nodes: Vec::new(),
            initializers: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Reserves a tensor name; names are the graph's identifiers and must be unique.
    fn fresh(&mut self, name: String) -> Result<String> {
        if self.names.insert(name.clone()) {
            Ok(name)
        } else {
            Err(Error::Quant(format!(
                "ONNX export: the tensor name `{name}` is used twice"
            )))
        }
    }

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
    ) -> Result<String> {
        // Node names must be unique too: a node is named after its (unique) output.
        let output = self.fresh(output.to_string())?;
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(output.clone()),
            op_type: Some(op.to_string()),
            domain: None,
            attribute,
            doc_string: None,
        });
        Ok(output)
    }

    fn initializer(
        &mut self,
        name: String,
        dtype: DataType,
        dims: &[usize],
        raw_data: Vec<u8>,
    ) -> Result<String> {
        let name = self.fresh(name)?;
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(dtype as i32),
            name: Some(name.clone()),
            raw_data: Some(raw_data),
            ..Default::default()
        });
        Ok(name)
    }

    fn init_f32(&mut self, name: String, dims: &[usize], data: &[f32]) -> Result<String> {
        self.initializer(name, DataType::Float, dims, raw(data, f32::to_le_bytes))
    }

    /// A scalar (`dims = []`) or, for `per_channel`, a 1-D initializer of `values`.
    fn init_params_f32(
        &mut self,
        name: String,
        values: &[f32],
        per_channel: bool,
    ) -> Result<String> {
        let dims: &[usize] = if per_channel { &[values.len()] } else { &[] };
        let values = if per_channel { values } else { &values[..1] };
        self.init_f32(name, dims, values)
    }

    /// Zero-point initializer(s) of a quantized type.
    fn init_zero_points(
        &mut self,
        name: String,
        dtype: DataType,
        values: &[i32],
        per_channel: bool,
    ) -> Result<String> {
        let dims: Vec<usize> = if per_channel {
            vec![values.len()]
        } else {
            vec![]
        };
        let values = if per_channel { values } else { &values[..1] };
        let bytes = match dtype {
            DataType::Uint8 => values.iter().map(|&z| z as u8).collect(),
            DataType::Int8 => values.iter().map(|&z| z as i8 as u8).collect(),
            _ => raw(values, i32::to_le_bytes),
        };
        self.initializer(name, dtype, &dims, bytes)
    }

    /// The scale / zero-point initializers of a layer's output.
    fn act_q(
        &mut self,
        path: &str,
        qparams: QParamsPt,
        dtype: QuantDtype,
        range: (i64, i64),
    ) -> Result<ActQ> {
        let zp_type = match dtype {
            QuantDtype::QUInt8 => DataType::Uint8,
            QuantDtype::QInt8 => DataType::Int8,
            QuantDtype::QInt32 => {
                return Err(Error::Quant(format!(
                    "ONNX export: `{path}` quantizes activations to qint32, which QuantizeLinear \
                     (opset 13) cannot"
                )));
            }
        };
        let scale = self.init_params_f32(format!("{path}.scale"), &[qparams.scale], false)?;
        let zero_point = self.init_zero_points(
            format!("{path}.zero_point"),
            zp_type,
            &[qparams.zero_point],
            false,
        )?;
        let clip = (range != dtype.bounds()).then_some(range);
        Ok(ActQ {
            scale,
            zero_point,
            qparams,
            dtype,
            clip,
        })
    }

    /// Output qparams of a converted layer (quint8, full range).
    fn int8_output(&mut self, path: &str, q: QParamsPt) -> Result<ActQ> {
        self.act_q(path, q, QuantDtype::QUInt8, (0, 255))
    }

    /// Output quantization of a prepared layer's fake-quant, `None` in float mode (or for a
    /// layer without one).
    fn fake_quant_output(
        &mut self,
        path: &str,
        post: &ActivationPostProcess,
    ) -> Result<Option<ActQ>> {
        match post {
            ActivationPostProcess::Identity(_) => Ok(None),
            ActivationPostProcess::Observer(_) => Err(Error::Quant(format!(
                "ONNX QDQ export: `{path}` has an observer, not a fake-quant (a PTQ-prepared \
                 model: convert it and export the int8 form)"
            ))),
            ActivationPostProcess::FakeQuantize(fq) => {
                let (q, per_channel) = fq_qparams(fq, path)?;
                if per_channel {
                    return Err(Error::Quant(format!(
                        "ONNX QDQ export: `{path}` fake-quantizes its output per channel; only \
                         per-tensor activations are supported"
                    )));
                }
                let qparams = QParamsPt {
                    scale: q.scale[0],
                    zero_point: q.zero_point[0] as i32,
                };
                let obs = &fq.activation_post_process;
                self.act_q(path, qparams, obs.dtype(), (fq.quant_min(), fq.quant_max()))
                    .map(Some)
            }
        }
    }

    /// `QuantizeLinear` (and the `Clip` of a narrow range) of a float tensor.
    fn quantize(&mut self, x: &str, q: &ActQ, out: &str) -> Result<String> {
        let qname = match q.clip {
            None => out.to_string(),
            Some(_) => format!("{out}.unclipped"),
        };
        let y = self.node(
            "QuantizeLinear",
            &[x, &q.scale, &q.zero_point],
            &qname,
            vec![],
        )?;
        match q.clip {
            None => Ok(y),
            Some((lo, hi)) => {
                let dtype = match q.dtype {
                    QuantDtype::QUInt8 => DataType::Uint8,
                    _ => DataType::Int8,
                };
                let lo =
                    self.init_zero_points(format!("{out}.clip_min"), dtype, &[lo as i32], false)?;
                let hi =
                    self.init_zero_points(format!("{out}.clip_max"), dtype, &[hi as i32], false)?;
                self.node("Clip", &[&y, &lo, &hi], out, vec![])
            }
        }
    }

    /// The float form of `x` for the node `consumer`: `x` itself, or a `DequantizeLinear` of
    /// its own (one per consumer, as QDQ graphs have them).
    fn float_input(&mut self, x: &Act, consumer: &str) -> Result<String> {
        match x {
            Act::Float(name) => Ok(name.clone()),
            Act::Quant(name, q) => {
                let out = format!("{consumer}.input_dq.{name}");
                self.node(
                    "DequantizeLinear",
                    &[name, &q.scale, &q.zero_point],
                    &out,
                    vec![],
                )
            }
        }
    }

    /// Quantizes the float result `y` of the layer at `path` when it has an output
    /// quantization.
    fn finish(&mut self, y: String, output: Option<ActQ>, path: &str) -> Result<Act> {
        match output {
            None => Ok(Act::Float(y)),
            Some(q) => {
                let name = self.quantize(&y, &q, path)?;
                Ok(Act::Quant(name, q))
            }
        }
    }

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

    /// The graph's output `logits`: the last value, dequantized if it is quantized.
    pub(super) fn output(&mut self, y: Act) -> Result<String> {
        match y {
            Act::Float(name) => {
                // A float network ends in its last node: name that node's output `logits`.
                let node = self
                    .nodes
                    .last_mut()
                    .filter(|n| n.output == [name.clone()])
                    .ok_or_else(|| Error::Quant("ONNX export: the graph has no output".into()))?;
                node.output = vec![OUTPUT_NAME.to_string()];
                self.fresh(OUTPUT_NAME.to_string())
            }
            Act::Quant(name, q) => self.node(
                "DequantizeLinear",
                &[&name, &q.scale, &q.zero_point],
                OUTPUT_NAME,
                vec![],
            ),
        }
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

fn weight_of(w: &crate::int8::QWeight) -> Weight {
    let (scales, zero_points, per_channel) = match w.qparams() {
        WeightQParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point], false),
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => (scales.clone(), zero_points.clone(), true),
    };
    Weight::Int8 {
        data: w.data().to_vec(),
        scales,
        zero_points,
        per_channel,
    }
}

fn int8_conv_parts(conv: &Int8Conv2d, output: ActQ) -> LayerParts<'static> {
    LayerParts {
        weight: weight_of(conv.weight()),
        shape: conv.weight().shape().to_vec(),
        bias: conv.bias().map_or(Bias::None, |b| Bias::Int32(b.to_vec())),
        bn: None,
        activation: if conv.spec().relu {
            Activation::Relu
        } else {
            Activation::Identity
        },
        output: Some(output),
    }
}

fn int8_linear_parts(
    linear: &Int8Linear,
    activation: Activation,
    output: ActQ,
) -> LayerParts<'static> {
    LayerParts {
        weight: weight_of(linear.weight()),
        shape: linear.weight().shape().to_vec(),
        bias: linear
            .bias()
            .map_or(Bias::None, |b| Bias::Int32(b.to_vec())),
        bn: None,
        activation,
        output: Some(output),
    }
}

fn float_parts(
    shape: Vec<usize>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    bn: Option<&BatchNorm2d>,
    activation: Activation,
) -> LayerParts<'_> {
    LayerParts {
        weight: Weight::Float(weight),
        shape,
        bias: bias.map_or(Bias::None, Bias::Float),
        bn,
        activation,
        output: None,
    }
}

/// The scale and zero-point a fake-quant applies now, and whether they are per channel;
/// errors if it never saw data.
fn fq_qparams(fq: &FakeQuantize, path: &str) -> Result<(crate::quant::QParams, bool)> {
    let obs = &fq.activation_post_process;
    if obs.min_max().0.iter().any(|v| v.is_infinite()) {
        return Err(Error::Quant(format!(
            "ONNX QDQ export: the fake-quant of `{path}` never saw data (train or calibrate the \
             prepared model first)"
        )));
    }
    Ok((fq.current_qparams(), obs.qscheme().is_per_channel()))
}

/// A weight fake-quantized with `fq`'s current qparams, as int8 values (`[out, ...]`).
fn fake_quant_weight(fq: &FakeQuantize, w: &[f32], out: usize, path: &str) -> Result<Weight> {
    let (q, per_channel) = fq_qparams(fq, &format!("{path}.weight"))?;
    let obs = &fq.activation_post_process;
    if obs.dtype() != QuantDtype::QInt8 {
        return Err(Error::Quant(format!(
            "ONNX QDQ export: `{path}` quantizes its weight to {:?}; only qint8 weights are \
             supported",
            obs.dtype()
        )));
    }
    if per_channel && (obs.ch_axis() != 0 || q.scale.len() != out) {
        return Err(Error::Quant(format!(
            "ONNX QDQ export: `{path}`'s weight is quantized per channel along axis {} with {} \
             scales; the export needs axis 0 (output channels)",
            obs.ch_axis(),
            q.scale.len()
        )));
    }
    let (qmin, qmax) = (fq.quant_min(), fq.quant_max());
    let per_out = w.len() / out.max(1);
    let channel = |c: usize| if per_channel { c } else { 0 };
    let data = w
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = channel(i / per_out.max(1));
            let (s, z) = (q.scale[c], q.zero_point[c]);
            quantize_val(v, 1.0f32 / s, z as i32, qmin, qmax) as i8
        })
        .collect();
    let zero_points = q.zero_point.iter().map(|&z| z as i32).collect();
    Ok(Weight::Int8 {
        data,
        scales: q.scale,
        zero_points,
        per_channel,
    })
}

fn missing_weight_fq(path: &str) -> Error {
    Error::Quant(format!(
        "ONNX QDQ export: `{path}` has no weight fake-quant (prepare_qat the model first, or \
         export it as float)"
    ))
}

/// A QAT conv: with BN in QAT fusion, the eval forward
/// `bn(conv(x, wfq(W·s)) / s + b)` with `s = γ/√(running_var + ε)` is exactly the conv with
/// weight `wfq(W·s)` and bias `(b − μ)·s + β`.
fn qat_conv_parts<'a>(
    layer: &'a ConvBnAct,
    path: &str,
    output: Option<ActQ>,
) -> Result<LayerParts<'a>> {
    let wfq = layer
        .weight_fake_quant
        .as_ref()
        .ok_or_else(|| missing_weight_fq(path))?;
    let weight = layer.conv.weight.val();
    let shape = weight.dims().to_vec();
    let out = shape[0];
    let bias = layer.conv.bias.as_ref().map(Param::val);
    let (weight, bias, bn) = match (&layer.bn, layer.fusion) {
        (Some(bn), Fusion::Qat) => {
            let s = bn.scale_factor();
            let w = weight * s.clone().reshape([-1, 1, 1, 1]);
            let b = match bias {
                Some(b) => b,
                None => s.zeros_like(),
            };
            let b = (b - bn.running_mean()) * s + bn.bias.val();
            (w, Some(b), None)
        }
        (bn, _) => (weight, bias, bn.as_ref()),
    };
    let w = fake_quant_weight(wfq, &tensor_to_vec(weight), out, path)?;
    Ok(LayerParts {
        weight: w,
        shape,
        bias: bias.map_or(Bias::None, |b| Bias::Float(tensor_to_vec(b))),
        bn,
        activation: layer.activation,
        output,
    })
}

/// A QAT linear layer (`LinearBn1d` folded as [`qat_conv_parts`]).
fn qat_linear_parts<'a>(
    layer: &'a LinearBnAct,
    path: &str,
    output: Option<ActQ>,
) -> Result<LayerParts<'a>> {
    let wfq = layer
        .weight_fake_quant
        .as_ref()
        .ok_or_else(|| missing_weight_fq(path))?;
    let weight_t = layer.linear.weight.val().transpose();
    let shape = weight_t.dims().to_vec();
    let out = shape[0];
    let bias = layer.linear.bias.as_ref().map(Param::val);
    let (weight_t, bias, bn) = match (&layer.bn, layer.fusion) {
        (Some(bn), Fusion::Qat) => {
            let s = bn.scale_factor();
            let w = weight_t * s.clone().unsqueeze_dim(1);
            let b = match bias {
                Some(b) => b,
                None => s.zeros_like(),
            };
            let b = (b - bn.running_mean()) * s + bn.bias.val();
            (w, Some(b), None)
        }
        (bn, _) => (weight_t, bias, bn.as_ref()),
    };
    let w = fake_quant_weight(wfq, &tensor_to_vec(weight_t), out, path)?;
    Ok(LayerParts {
        weight: w,
        shape,
        bias: bias.map_or(Bias::None, |b| Bias::Float(tensor_to_vec(b))),
        bn,
        activation: layer.activation,
        output,
    })
}
