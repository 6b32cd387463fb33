//! What one weighted layer (convolution, linear) contributes to the graph in each export form:
//! its weight (float, or int8 with scales and zero-points), its bias (float, or quantized to
//! int32 at emission), its batch norm where it still has one, its activation and its output
//! quantization; and [`Builder::weighted_layer`], which writes them as
//! `[DQ] → Conv/Gemm → [BatchNormalization] → [activation] → [Q]`.

use super::graph::{Act, ActQ, Builder, raw};
use super::proto::{AttributeProto, DataType};
use crate::int8::tensor::quantize_val;
use crate::int8::{QWeight, WeightQParams};
use crate::quant::{FakeQuantize, QuantDtype};
use crate::{Error, Result};

/// The weight of a conv / linear layer as written to the graph.
pub enum Weight {
    /// Float values.
    Float(Vec<f32>),
    /// int8 values with their scales and zero-points (one each, or one per output channel).
    Int8 {
        /// The values, output channels first.
        data: Vec<i8>,
        /// Scales.
        scales: Vec<f32>,
        /// Zero-points.
        zero_points: Vec<i32>,
        /// Whether there is one scale per output channel (axis 0).
        per_channel: bool,
    },
}

/// The bias of a conv / linear layer as written to the graph.
pub enum Bias {
    /// No bias.
    None,
    /// A float bias.
    Float(Vec<f32>),
    /// Float values, quantized to int32 with the input scale at emission.
    Int32(Vec<f32>),
}

/// An eval-mode batch norm after the layer: `γ`, `β`, running mean and variance, `ε`.
pub struct BnParams {
    /// `γ`.
    pub weight: Vec<f32>,
    /// `β`.
    pub bias: Vec<f32>,
    /// Running mean.
    pub running_mean: Vec<f32>,
    /// Running variance.
    pub running_var: Vec<f32>,
    /// `ε`.
    pub eps: f64,
}

/// The activation a weighted layer applies after its (normalised) output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxActivation {
    /// None.
    Identity,
    /// `Relu` (no node where the output quantization's lower bound is its zero-point).
    Relu,
    /// `Clip(0, 6)`.
    Relu6,
}

/// Everything the graph needs about one conv / linear layer, whatever the export form.
pub struct LayerParts {
    /// The weight.
    pub weight: Weight,
    /// Its shape, output channels first.
    pub shape: Vec<usize>,
    /// The bias.
    pub bias: Bias,
    /// A batch norm the layer still has.
    pub bn: Option<BnParams>,
    /// The activation.
    pub activation: OnnxActivation,
    /// The output quantization, `None` for a float output.
    pub output: Option<ActQ>,
}

/// An int8 weight as written to the graph.
pub fn weight_of(w: &QWeight) -> Weight {
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

/// A converted layer: int8 weight, int32 bias, output quantization.
pub fn int8_parts(
    weight: &QWeight,
    bias: Option<&[f32]>,
    activation: OnnxActivation,
    output: ActQ,
) -> LayerParts {
    LayerParts {
        weight: weight_of(weight),
        shape: weight.shape().to_vec(),
        bias: bias.map_or(Bias::None, |b| Bias::Int32(b.to_vec())),
        bn: None,
        activation,
        output: Some(output),
    }
}

/// A float layer (weight `[out, ...]`), with the batch norm it still has.
pub fn float_parts(
    shape: Vec<usize>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    bn: Option<BnParams>,
    activation: OnnxActivation,
) -> LayerParts {
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
pub fn fq_qparams(fq: &FakeQuantize, path: &str) -> Result<(crate::quant::QParams, bool)> {
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
pub fn fake_quant_weight(fq: &FakeQuantize, w: &[f32], out: usize, path: &str) -> Result<Weight> {
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

/// The error for a QAT layer without a weight fake-quant.
pub fn missing_weight_fq(path: &str) -> Error {
    Error::Quant(format!(
        "ONNX QDQ export: `{path}` has no weight fake-quant (prepare_qat the model first, or \
         export it as float)"
    ))
}

impl Builder {
    /// `[DQ] → Conv/Gemm → [BatchNormalization] → [activation] → [Q]` for one layer.
    pub fn weighted_layer(
        &mut self,
        op: &str,
        path: &str,
        x: &Act,
        parts: LayerParts,
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
        if let Some(bn) = &parts.bn {
            y = self.batch_norm(bn, path, &y)?;
        }
        // A ReLU whose output quantization starts at its zero-point is that quantization's
        // lower bound: no node (onnxruntime then fuses DQ → Conv → Q into QLinearConv).
        let relu_folded = parts.output.as_ref().is_some_and(|q| {
            let lo = q.clip.map_or(q.dtype.bounds().0, |c| c.0);
            q.qparams.zero_point as i64 == lo
        });
        y = match parts.activation {
            OnnxActivation::Identity => y,
            OnnxActivation::Relu if relu_folded => y,
            OnnxActivation::Relu => self.node("Relu", &[&y], &format!("{path}.relu"), vec![])?,
            OnnxActivation::Relu6 => {
                let lo = self.init_f32(format!("{path}.relu6_min"), &[], &[0.0])?;
                let hi = self.init_f32(format!("{path}.relu6_max"), &[], &[6.0])?;
                self.node("Clip", &[&y, &lo, &hi], &format!("{path}.relu6"), vec![])?
            }
        };
        self.finish(y, parts.output, path)
    }

    fn batch_norm(&mut self, bn: &BnParams, path: &str, x: &str) -> Result<String> {
        let c = bn.weight.len();
        let gamma = self.init_f32(format!("{path}.bn.weight"), &[c], &bn.weight)?;
        let beta = self.init_f32(format!("{path}.bn.bias"), &[c], &bn.bias)?;
        let mean = self.init_f32(format!("{path}.bn.running_mean"), &[c], &bn.running_mean)?;
        let var = self.init_f32(format!("{path}.bn.running_var"), &[c], &bn.running_var)?;
        self.node(
            "BatchNormalization",
            &[x, &gamma, &beta, &mean, &var],
            &format!("{path}.bn"),
            vec![AttributeProto::float("epsilon", bn.eps as f32)],
        )
    }
}
