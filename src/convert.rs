//! `convert`: turning a prepared (PTQ) or fake-quantized (QAT) layer into its int8 form, as
//! `torch.ao.quantization.convert` does with `from_float` (torch 2.5.1). Qparams come from the
//! observers with the Python formula (`calculate_qparams`), as in PyTorch.
//!
//! [`convert`] converts a whole [`Quantizable`] model in place: every layer gets its int8 form
//! and the model's forward, run on [`QBatch`](crate::nn::QBatch)es, runs on the int8 kernels.
//! [`convert_conv`] and [`convert_linear`] convert one layer.

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::Tensor;

use crate::int8::{Conv2dSpec, Engine, Int8Conv2d, Int8Linear, QParamsPt, QWeight};
use crate::nn::{Activation, ConvBnAct, Fusion, LinearBnAct, QuantLayer, Quantizable};
use crate::nn::{ActivationPostProcess, QuantizedOutput};
use crate::quant::observer::tensor_to_vec;
use crate::quant::{FakeQuantize, Observer, QParams};
use crate::{Error, Result};

/// Output qparams of a layer from its observer, or an error naming what is missing.
fn single_qparams(qp: QParams, what: &str) -> Result<QParamsPt> {
    match (qp.scale.as_slice(), qp.zero_point.as_slice()) {
        ([s], [z]) => QParamsPt::new(*s, *z as i32),
        _ => Err(Error::Quant(format!(
            "{what}: expected per-tensor output qparams"
        ))),
    }
}

/// PyTorch's `weight_post_process(mod.weight)` then `_quantize_weight`: the weight fake-quant
/// observes the (folded) weight once more, and its Python-formula qparams quantize it to qint8.
/// `weight` has the output channels first.
fn quantize_weight<const D: usize>(wfq: &FakeQuantize, weight: Tensor<D>) -> Result<QWeight> {
    let weight = weight.detach();
    let _ = wfq.forward(weight.clone());
    let wqp = wfq.calculate_qparams()?;
    let shape = weight.dims();
    let w_host = tensor_to_vec(weight);
    let zero_points: Vec<i32> = wqp.zero_point.iter().map(|&z| z as i32).collect();
    if wqp.scale.len() == 1 {
        QWeight::quantize_per_tensor(&w_host, &shape, wqp.scale[0], zero_points[0])
    } else {
        QWeight::quantize_per_channel(&w_host, &shape, &wqp.scale, &zero_points)
    }
}

/// The weight fake-quant and the calibrated output observer of a prepared layer, or an error
/// naming what is missing.
fn prepared_parts<'a>(
    weight_fake_quant: &'a Option<FakeQuantize>,
    post: &'a ActivationPostProcess,
    kind: &str,
) -> Result<(&'a FakeQuantize, &'a Observer)> {
    let wfq = weight_fake_quant.as_ref().ok_or_else(|| {
        Error::Quant(format!(
            "convert needs a weight fake-quant on every {kind} (prepare_qat first)"
        ))
    })?;
    let observer = post.observer().ok_or_else(|| {
        Error::Quant(format!(
            "convert before prepare: a {kind} has no output observer"
        ))
    })?;
    if observer.min_max().0.iter().any(|v| v.is_infinite()) {
        return Err(Error::Quant(format!(
            "convert before calibration: a {kind}'s output observer saw no data"
        )));
    }
    Ok((wfq, observer))
}

/// The int8 linear layer of a prepared [`LinearBnAct`] without batch norm
/// (`nnq.Linear.from_float` / `nniq.LinearReLU.from_float`), reading `input` qparams from the
/// layer before it.
pub fn convert_linear(layer: &LinearBnAct, input: QParamsPt, engine: Engine) -> Result<Int8Linear> {
    let (wfq, observer) = prepared_parts(
        &layer.weight_fake_quant,
        &layer.activation_post_process,
        "linear layer",
    )?;
    if layer.bn.is_some() {
        return Err(Error::Quant(
            "converting linear + batch norm (LinearBn1d) is not supported yet".into(),
        ));
    }
    // Burn stores [in, out]; PyTorch's (and the int8 kernels') layout is [out, in].
    let qweight = quantize_weight(wfq, layer.linear.weight.val().transpose())?;
    let output = single_qparams(observer.calculate_qparams()?, "linear output")?;
    let bias = layer.linear.bias.as_ref().map(|b| tensor_to_vec(b.val()));
    let relu = layer.activation == Activation::Relu;
    Int8Linear::new(qweight, bias, relu, input, output, engine)
}

/// The geometry and fused ReLU of a layer's int8 convolution; errors for what the int8 kernels
/// do not run (unequal strides, dilation, uneven padding).
pub(crate) fn conv_spec(layer: &ConvBnAct) -> Result<Conv2dSpec> {
    let conv = &layer.conv;
    if conv.stride[0] != conv.stride[1] || conv.dilation != [1, 1] {
        return Err(Error::Quant(
            "int8 convolutions need equal strides and no dilation".into(),
        ));
    }
    let padding = match conv.padding {
        burn::nn::PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
        burn::nn::PaddingConfig2d::Valid => 0,
        _ => {
            return Err(Error::Quant(
                "int8 convolutions need the same explicit padding on every side".into(),
            ));
        }
    };
    Ok(Conv2dSpec {
        stride: conv.stride[0],
        padding,
        groups: conv.groups,
        relu: layer.activation == Activation::Relu,
    })
}

/// The int8 convolution of a fused and prepared [`ConvBnAct`] (`nniq.ConvReLU2d.from_float` /
/// `nnq.Conv2d.from_float`), reading `input` qparams from the layer before it:
///
/// 1. a QAT layer with batch norm folds the running statistics into the weight and bias
///    (`fuse_conv_bn_weights`);
/// 2. the weight fake-quant sees the folded weight once more (its observer updates, as
///    PyTorch's `weight_post_process(mod.weight)` does) and gives the weight qparams;
/// 3. the weight is quantized to qint8 with them; the output observer gives the output qparams.
///
/// Errors name what is missing: no observer (not prepared), no weight fake-quant (PTQ layers
/// need `prepare` + calibration first), an unobserved output.
pub fn convert_conv(layer: &ConvBnAct, input: QParamsPt, engine: Engine) -> Result<Int8Conv2d> {
    let (wfq, observer) = prepared_parts(
        &layer.weight_fake_quant,
        &layer.activation_post_process,
        "convolution",
    )?;
    let weight = layer.conv.weight.val();
    let out = layer.out_channels();
    let bias = layer.conv.bias.as_ref().map(Param::val);
    let (weight, bias) = match (&layer.bn, layer.fusion) {
        (Some(bn), Fusion::Qat) => {
            // fuse_conv_bn_weights: w·(γ·rsqrt(σ²+ε)), (b − μ)·rsqrt(σ²+ε)·γ + β.
            let rsqrt = bn.running_var().add_scalar(bn.eps).sqrt().recip();
            let factor = bn.weight.val() * rsqrt.clone();
            let w = weight * factor.clone().reshape([-1, 1, 1, 1]);
            let b = bias.unwrap_or_else(|| Tensor::zeros([out], &w.device()));
            let b = (b - bn.running_mean()) * rsqrt * bn.weight.val() + bn.bias.val();
            (w, Some(b))
        }
        (Some(_), _) => {
            return Err(Error::Quant(
                "convert needs conv + batch norm fused (fuse_model) before prepare".into(),
            ));
        }
        (None, _) => (weight, bias),
    };
    let qweight = quantize_weight(wfq, weight)?;
    let output = single_qparams(observer.calculate_qparams()?, "convolution output")?;
    let spec = conv_spec(layer)?;
    Int8Conv2d::new(
        qweight,
        bias.map(tensor_to_vec),
        spec,
        input,
        output,
        engine,
    )
}

/// The int8 form of one layer, built before any layer is changed.
pub(crate) enum Int8Part {
    Conv(Arc<Int8Conv2d>),
    Linear(Arc<Int8Linear>),
    Output(QuantizedOutput),
}

impl Int8Part {
    fn output_qparams(&self) -> QParamsPt {
        match self {
            Int8Part::Conv(c) => c.output_qparams(),
            Int8Part::Linear(l) => l.output_qparams(),
            Int8Part::Output(o) => o.qparams,
        }
    }
}

/// Gives every quantizable layer of `model` the int8 form `make(name, layer, input)` builds,
/// all or nothing: every part is built first, so an error leaves the model unchanged. `input`
/// is the previous layer's output qparams — most layers' input, and only a hint (a layer fed
/// by another one, as a block after a residual add, adapts at its first call).
pub(crate) fn install_int8<M: Quantizable>(
    model: &mut M,
    mut make: impl FnMut(&str, QuantLayer<'_>, QParamsPt) -> Result<Int8Part>,
) -> Result<()> {
    let mut parts = Vec::new();
    let mut previous = QParamsPt::new(1.0, 0)?;
    model.visit_layers(&mut |name, layer| {
        let part = make(name, layer, previous)?;
        previous = part.output_qparams();
        parts.push(part);
        Ok(())
    })?;
    let mut parts = parts.into_iter();
    model.visit_layers(&mut |_, layer| {
        match (layer, parts.next()) {
            (QuantLayer::Conv(c), Some(Int8Part::Conv(int8))) => c.int8 = Some(int8),
            (QuantLayer::Linear(l), Some(Int8Part::Linear(int8))) => l.int8 = Some(int8),
            (QuantLayer::Quant(stub), Some(Int8Part::Output(out))) => stub.int8 = Some(out),
            (QuantLayer::Functional(f), Some(Int8Part::Output(out))) => f.int8 = Some(out),
            _ => {
                return Err(Error::Quant(
                    "the model's layers changed while converting".into(),
                ));
            }
        }
        Ok(())
    })
}

/// The output qparams of a `QuantStub` or `FloatFunctional` (`Quantize.from_float`,
/// `QFunctional.from_float`). An add that never ran (torchvision's `skip_add` in blocks without
/// a residual connection) gets PyTorch's defaults for an empty observer, scale 1 and
/// zero-point 0; a quant stub that never ran means the model was not calibrated.
fn output_qparams(post: &ActivationPostProcess, is_stub: bool) -> Result<QParamsPt> {
    let kind = if is_stub {
        "QuantStub"
    } else {
        "FloatFunctional"
    };
    let observer = post
        .observer()
        .ok_or_else(|| Error::Quant(format!("convert before prepare: a {kind} has no observer")))?;
    if observer.min_max().0.iter().any(|v| v.is_infinite()) {
        if is_stub {
            return Err(Error::Quant(
                "convert before calibration: the QuantStub's observer saw no data (run \
                 calibration batches through the prepared model first)"
                    .into(),
            ));
        }
        return QParamsPt::new(1.0, 0);
    }
    single_qparams(observer.calculate_qparams()?, kind)
}

/// `torch.ao.quantization.convert` for a prepared (PTQ, calibrated) or QAT-trained model:
/// every convolution and linear layer gets its int8 kernel (batch norm folded from running
/// statistics, weights quantized with their observer's qparams), every `QuantStub` and
/// `FloatFunctional` its output scale and zero-point, all with the Python observer formula, as
/// PyTorch does. The model's forward then runs on [`QBatch`](crate::nn::QBatch)es (e.g.
/// `MobileNetV2::forward_int8`); the float
/// parameters stay, so the float forward still works.
///
/// `engine` picks whose integer arithmetic the kernels reproduce: `qnnpack` or `x86`. Errors
/// (convert before prepare or calibration, an unsupported layer) name the layer and leave the
/// model unchanged.
pub fn convert<M: Quantizable>(model: &mut M, engine: Engine) -> Result<()> {
    install_int8(model, |name, layer, input| {
        let named = |e: Error| Error::Quant(format!("converting `{name}`: {e}"));
        let output = |post: &ActivationPostProcess, is_stub: bool| {
            let qparams = output_qparams(post, is_stub).map_err(named)?;
            Ok(Int8Part::Output(QuantizedOutput { qparams, engine }))
        };
        match layer {
            QuantLayer::Conv(c) => Ok(Int8Part::Conv(Arc::new(
                convert_conv(c, input, engine).map_err(named)?,
            ))),
            QuantLayer::Linear(l) => Ok(Int8Part::Linear(Arc::new(
                convert_linear(l, input, engine).map_err(named)?,
            ))),
            QuantLayer::Quant(stub) => output(&stub.activation_post_process, true),
            QuantLayer::Functional(f) => output(&f.activation_post_process, false),
        }
    })
}

/// Whether every quantizable layer of `model` has its int8 form (the model was converted or
/// loaded from an int8 checkpoint), or the path of the first one that has not.
pub fn check_converted<M: Quantizable>(model: &mut M) -> Result<()> {
    model.visit_layers(&mut |name, layer| {
        let done = match layer {
            QuantLayer::Conv(c) => c.int8.is_some(),
            QuantLayer::Linear(l) => l.int8.is_some(),
            QuantLayer::Quant(stub) => stub.int8.is_some(),
            QuantLayer::Functional(f) => f.int8.is_some(),
        };
        if done {
            Ok(())
        } else {
            Err(Error::Quant(format!(
                "`{name}` has no int8 form: convert the model (or load an int8 checkpoint) first"
            )))
        }
    })
}
