//! `convert`: turning a prepared (PTQ) or fake-quantized (QAT) layer into its int8 form, as
//! `torch.ao.quantization.convert` does with `from_float` (torch 2.5.1). Qparams come from the
//! observers with the Python formula (`calculate_qparams`), as in PyTorch.
//!
//! Today: convolution and linear layers ([`convert_conv`], [`convert_linear`]). The whole-model
//! convert (int8 model type, add, stubs) builds on them.

use burn::module::Param;
use burn::tensor::Tensor;

use crate::int8::{Conv2dSpec, Engine, Int8Conv2d, Int8Linear, QParamsPt, QWeight};
use crate::nn::ActivationPostProcess;
use crate::nn::{Activation, ConvBnAct, Fusion, LinearBnAct};
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
    let spec = Conv2dSpec {
        stride: conv.stride[0],
        padding,
        groups: conv.groups,
        relu: layer.activation == Activation::Relu,
    };
    Int8Conv2d::new(
        qweight,
        bias.map(tensor_to_vec),
        spec,
        input,
        output,
        engine,
    )
}
