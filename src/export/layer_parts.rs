//! What one convolution or linear layer contributes to the graph in each export form: its
//! weight (float, or int8 with scales and zero-points), its bias (float, or quantized to int32
//! at emission), its batch norm where it still has one, its activation and its output
//! quantization.

use burn::module::Param;
use burn::tensor::Tensor;

use super::graph::ActQ;
use crate::fuse::bn_folding::fold_with_scale;
use crate::int8::tensor::quantize_val;
use crate::int8::{Int8Conv2d, Int8Linear, WeightQParams};
use crate::nn::{Activation, BatchNorm2d, ConvBnAct, Fusion, LinearBnAct};
use crate::quant::observer::tensor_to_vec;
use crate::quant::{FakeQuantize, QuantDtype};
use crate::{Error, Result};

/// The weight of a conv / linear layer as written to the graph.
pub(super) enum Weight {
    Float(Vec<f32>),
    Int8 {
        data: Vec<i8>,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        per_channel: bool,
    },
}

/// The bias of a conv / linear layer as written to the graph.
pub(super) enum Bias {
    None,
    Float(Vec<f32>),
    /// Float values, quantized to int32 with the input scale at emission.
    Int32(Vec<f32>),
}

/// Everything the graph needs about one conv / linear layer, whatever the export form.
pub(super) struct LayerParts<'a> {
    pub(super) weight: Weight,
    pub(super) shape: Vec<usize>,
    pub(super) bias: Bias,
    pub(super) bn: Option<&'a BatchNorm2d>,
    pub(super) activation: Activation,
    pub(super) output: Option<ActQ>,
}

pub(super) fn weight_of(w: &crate::int8::QWeight) -> Weight {
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

pub(super) fn int8_conv_parts(conv: &Int8Conv2d, output: ActQ) -> LayerParts<'static> {
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

pub(super) fn int8_linear_parts(
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

pub(super) fn float_parts(
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
pub(super) fn fq_qparams(fq: &FakeQuantize, path: &str) -> Result<(crate::quant::QParams, bool)> {
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
pub(super) fn fake_quant_weight(
    fq: &FakeQuantize,
    w: &[f32],
    out: usize,
    path: &str,
) -> Result<Weight> {
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

pub(super) fn missing_weight_fq(path: &str) -> Error {
    Error::Quant(format!(
        "ONNX QDQ export: `{path}` has no weight fake-quant (prepare_qat the model first, or \
         export it as float)"
    ))
}

/// A QAT conv: with BN in QAT fusion, the eval forward
/// `bn(conv(x, wfq(W·s)) / s + b)` with `s = γ/√(running_var + ε)` is exactly the conv with
/// weight `wfq(W·s)` and bias `(b − μ)·s + β`.
pub(super) fn qat_conv_parts<'a>(
    layer: &'a ConvBnAct,
    path: &str,
    output: Option<ActQ>,
) -> Result<LayerParts<'a>> {
    let qat = QatLayer {
        weight_fake_quant: layer.weight_fake_quant.as_ref(),
        weight: layer.conv.weight.val(),
        bias: layer.conv.bias.as_ref().map(Param::val),
        bn: layer.bn.as_ref(),
        fusion: layer.fusion,
        activation: layer.activation,
    };
    qat.parts(path, output)
}

/// A QAT linear layer (`LinearBn1d` folded as [`qat_conv_parts`]), its weight as `[out, in]`.
pub(super) fn qat_linear_parts<'a>(
    layer: &'a LinearBnAct,
    path: &str,
    output: Option<ActQ>,
) -> Result<LayerParts<'a>> {
    let qat = QatLayer {
        weight_fake_quant: layer.weight_fake_quant.as_ref(),
        weight: layer.linear.weight.val().transpose(),
        bias: layer.linear.bias.as_ref().map(Param::val),
        bn: layer.bn.as_ref(),
        fusion: layer.fusion,
        activation: layer.activation,
    };
    qat.parts(path, output)
}

/// What a QAT conv or linear layer exports from, its weight with output channels first.
struct QatLayer<'a, const D: usize> {
    weight_fake_quant: Option<&'a FakeQuantize>,
    weight: Tensor<D>,
    bias: Option<Tensor<1>>,
    bn: Option<&'a BatchNorm2d>,
    fusion: Fusion,
    activation: Activation,
}

impl<'a, const D: usize> QatLayer<'a, D> {
    fn parts(self, path: &str, output: Option<ActQ>) -> Result<LayerParts<'a>> {
        let wfq = self
            .weight_fake_quant
            .ok_or_else(|| missing_weight_fq(path))?;
        let shape = self.weight.dims().to_vec();
        let (weight, bias, bn) = match (self.bn, self.fusion) {
            (Some(bn), Fusion::Qat) => {
                let (w, b) = fold_with_scale(self.weight, self.bias, bn, bn.scale_factor(), 0);
                (w, Some(b), None)
            }
            (bn, _) => (self.weight, self.bias, bn),
        };
        let weight = fake_quant_weight(wfq, &tensor_to_vec(weight), shape[0], path)?;
        Ok(LayerParts {
            weight,
            shape,
            bias: bias.map_or(Bias::None, |b| Bias::Float(tensor_to_vec(b))),
            bn,
            activation: self.activation,
            output,
        })
    }
}
