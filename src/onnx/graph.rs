//! The graph being written: tensor names, nodes and initializers, and the quantization
//! primitives every layer's nodes are built from (`QuantizeLinear` with its `Clip`, one
//! `DequantizeLinear` per consumer, output qparams of converted and fake-quantized layers).

use std::collections::HashSet;

use super::parts::fq_qparams;
use super::proto::{AttributeProto, DataType, NodeProto, TensorProto};
use super::{ExportKind, OUTPUT_NAME};
use crate::int8::QParamsPt;
use crate::quant::{FakeQuantize, QuantDtype};
use crate::{Error, Result};

/// Quantization of an activation: the initializers holding its scale and zero-point and their
/// values, and the range a fake-quant clamps to.
#[derive(Debug, Clone)]
pub struct ActQ {
    pub scale: String,
    pub zero_point: String,
    pub qparams: QParamsPt,
    pub dtype: QuantDtype,
    /// `(quant_min, quant_max)` when narrower than the dtype's bounds.
    pub clip: Option<(i64, i64)>,
}

/// A value flowing between layers: a float tensor, or a quantized one with its qparams.
#[derive(Debug, Clone)]
pub enum Act {
    Float(String),
    Quant(String, ActQ),
}

/// The graph under construction.
pub struct Builder {
    pub kind: ExportKind,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    names: HashSet<String>,
}

/// The little-endian bytes of `data`.
pub fn raw<T: Copy, const N: usize>(data: &[T], bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    data.iter().flat_map(|&v| bytes(v)).collect()
}

pub fn not_converted(path: &str) -> Error {
    Error::Quant(format!(
        "cannot export the int8 model to ONNX: `{path}` has no int8 form (convert the model or \
         load an int8 checkpoint first)"
    ))
}

impl Builder {
    pub fn new(kind: ExportKind) -> Self {
        Builder {
            kind,
            nodes: Vec::new(),
            initializers: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// The form the layer at `path` is written in: the export's, except that a layer left in
    /// float (`qconfig = None`: not prepared, not converted) is written in float in the int8
    /// and QDQ forms too. A prepared layer without its int8 form cannot be written in int8.
    pub fn layer_form(&self, path: &str, prepared: bool, converted: bool) -> Result<ExportKind> {
        match (self.kind, prepared, converted) {
            (ExportKind::Int8, _, true) => Ok(ExportKind::Int8),
            (ExportKind::Int8, true, false) => Err(not_converted(path)),
            (ExportKind::Float, ..) | (_, false, false) => Ok(ExportKind::Float),
            (ExportKind::FakeQuant, ..) => Ok(ExportKind::FakeQuant),
        }
    }

    /// Reserves a tensor name; names are the graph's identifiers and must be unique.
    pub fn fresh(&mut self, name: String) -> Result<String> {
        if self.names.insert(name.clone()) {
            Ok(name)
        } else {
            Err(Error::Quant(format!(
                "ONNX export: the tensor name `{name}` is used twice"
            )))
        }
    }

    pub fn node(
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

    pub fn initializer(
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

    pub fn init_f32(&mut self, name: String, dims: &[usize], data: &[f32]) -> Result<String> {
        self.initializer(name, DataType::Float, dims, raw(data, f32::to_le_bytes))
    }

    /// A scalar (`dims = []`) or, for `per_channel`, a 1-D initializer of `values`.
    pub fn init_params_f32(
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
    pub fn init_zero_points(
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
    pub fn act_q(
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
    pub fn int8_output(&mut self, path: &str, q: QParamsPt) -> Result<ActQ> {
        self.act_q(path, q, QuantDtype::QUInt8, (0, 255))
    }

    /// The output quantization a fake-quant applies now (a QAT layer's output in the QDQ form).
    pub fn fake_quant_output(&mut self, path: &str, fq: &FakeQuantize) -> Result<ActQ> {
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
    }

    /// `QuantizeLinear` (and the `Clip` of a narrow range) of a float tensor.
    pub fn quantize(&mut self, x: &str, q: &ActQ, out: &str) -> Result<String> {
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
    pub fn float_input(&mut self, x: &Act, consumer: &str) -> Result<String> {
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
    pub fn finish(&mut self, y: String, output: Option<ActQ>, path: &str) -> Result<Act> {
        match output {
            None => Ok(Act::Float(y)),
            Some(q) => {
                let name = self.quantize(&y, &q, path)?;
                Ok(Act::Quant(name, q))
            }
        }
    }

    /// The graph's output `logits`: the last value, dequantized if it is quantized.
    pub fn output(&mut self, y: Act) -> Result<String> {
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

    /// `flatten(adaptive_avg_pool2d(x, 1), 1)`: on int8 activations
    /// `DQ → GlobalAveragePool → Q → DQ → Flatten → Q`, keeping the input's qparams.
    pub fn pool_flatten(&mut self, x: &Act, suffix: &str) -> Result<Act> {
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

    /// `x.narrow(1, start, len)` of an `[N, C, H, W]` value: `Slice(starts=[start],
    /// ends=[start + len], axes=[1])`, on the quantized tensor itself where it is one (a slice
    /// keeps its qparams).
    pub fn narrow_channels(
        &mut self,
        x: &Act,
        start: usize,
        len: usize,
        name: &str,
    ) -> Result<Act> {
        let bound = |builder: &mut Self, what: &str, v: usize| {
            builder.initializer(
                format!("{name}.{what}"),
                DataType::Int64,
                &[1],
                raw(&[v as i64], i64::to_le_bytes),
            )
        };
        let starts = bound(self, "starts", start)?;
        let ends = bound(self, "ends", start + len)?;
        let axes = bound(self, "axes", 1)?;
        let (input, q) = match x {
            Act::Float(v) => (v, None),
            Act::Quant(v, q) => (v, Some(q)),
        };
        let y = self.node("Slice", &[input, &starts, &ends, &axes], name, vec![])?;
        Ok(match q {
            Some(q) => Act::Quant(y, q.clone()),
            None => Act::Float(y),
        })
    }

    /// ShuffleNetV2's `channel_shuffle(x, groups)` of an `[N, channels, H, W]` value:
    /// `Reshape([0, g, C/g, −1]) → Transpose(0, 2, 1, 3) → Reshape(Shape(x))`, as PyTorch's
    /// `view`/`transpose`/`view`; on int8 activations `DQ → … → Q` with the input's qparams.
    pub fn channel_shuffle(
        &mut self,
        x: &Act,
        channels: usize,
        groups: usize,
        name: &str,
    ) -> Result<Act> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::Quant(format!(
                "ONNX export: `{name}`: {channels} channels do not split into {groups} groups"
            )));
        }
        let xf = self.float_input(x, name)?;
        let split = [0, groups as i64, (channels / groups) as i64, -1];
        let split = self.initializer(
            format!("{name}.split_shape"),
            DataType::Int64,
            &[4],
            raw(&split, i64::to_le_bytes),
        )?;
        let shape = self.node("Shape", &[&xf], &format!("{name}.shape"), vec![])?;
        let grouped = self.node(
            "Reshape",
            &[&xf, &split],
            &format!("{name}.grouped"),
            vec![],
        )?;
        let perm = AttributeProto::ints("perm", &[0, 2, 1, 3]);
        let swapped = self.node(
            "Transpose",
            &[&grouped],
            &format!("{name}.swapped"),
            vec![perm],
        )?;
        let y = self.node(
            "Reshape",
            &[&swapped, &shape],
            &format!("{name}.float"),
            vec![],
        )?;
        match (x, self.kind) {
            (Act::Quant(_, q), ExportKind::Int8) => {
                let out = self.quantize(&y, q, name)?;
                Ok(Act::Quant(out, q.clone()))
            }
            _ => Ok(Act::Float(y)),
        }
    }
}
