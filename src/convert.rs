//! `convert`: every prepared (PTQ) or fake-quantized (QAT) layer of a model gets its int8
//! form, as `torch.ao.quantization.convert` does with each module's `from_float` (torch
//! 2.5.1). The layers convert themselves ([`QuantLayer::convert`]); this is the walk. Qparams
//! come from the observers with the Python formula (`calculate_qparams`), as in PyTorch.
//! [`strip_float`] then frees the float weights the int8 layers no longer need.

use crate::error::StageProblem;
use crate::int8::{Engine, QParamsPt};
use crate::nn::layer::Boundary;
use crate::nn::{QuantLayer, Quantizable};
use crate::quantize::on_copy;
use crate::{Error, Result};

/// Calls `build(path, layer, input)` on every layer in walk order, `input` being the output
/// qparams of the layer before (a hint: a layer fed by another one, as a block after a
/// residual add, adapts at its first call), all or nothing.
pub(crate) fn build_int8<M: Quantizable + Clone>(
    model: &mut M,
    mut build: impl FnMut(&str, &mut dyn QuantLayer, QParamsPt) -> Result<()>,
) -> Result<()> {
    on_copy(model, |m| {
        let mut previous = QParamsPt::new(1.0, 0)?;
        m.visit_layers(&mut |path, layer| {
            build(path, layer, previous).map_err(|e| e.at_layer(path))?;
            if let Some(out) = layer.int8_output() {
                previous = out.qparams;
            }
            Ok(())
        })
    })
}

/// `torch.ao.quantization.convert` for a prepared (PTQ, calibrated) or QAT-trained model:
/// every convolution and linear layer gets its int8 kernel (batch norm folded from running
/// statistics, weights quantized with their observer's qparams), every `QuantStub` and
/// `FloatFunctional` its output scale and zero-point, all with the Python observer formula, as
/// PyTorch does. The model's forward then runs on [`QBatch`](crate::nn::QBatch)es (e.g.
/// `MobileNetV2::forward_int8`); the float parameters stay, so the float forward still works,
/// until [`strip_float`] frees them.
///
/// Layers the qconfig left in float (not prepared) stay float and run their float forward
/// inside the int8 model, between a `DeQuantStub` and a `QuantStub`, as in PyTorch's eager
/// mode. In walk order (the forward's order), a quantized layer must come after a `QuantStub`
/// and a float one after a `DeQuantStub`: a model that would feed int8 into a float layer (or
/// float into an int8 one) is refused, naming the layer.
///
/// `engine` picks whose integer arithmetic the kernels reproduce: `qnnpack` or `x86`. Errors
/// (convert before prepare or calibration, an unsupported layer) name the layer's path and
/// leave the model unchanged.
pub fn convert<M: Quantizable + Clone>(model: &mut M, engine: Engine) -> Result<()> {
    if !crate::quantize::is_prepared(model) {
        return Err(Error::stage(StageProblem::NotPrepared {
            what: "no layer has an observer or fake-quant (prepare or prepare_qat the model \
                   first)"
                .into(),
        }));
    }
    let mut int8_domain = false;
    build_int8(model, |_, layer, input| {
        let prepared = layer.output_observer().is_some();
        let misplaced = |what: &str| Err(Error::stage(StageProblem::Unsupported(what.into())));
        match (layer.boundary(), prepared) {
            (Some(Boundary::Dequantize), _) => int8_domain = false,
            (Some(Boundary::Quantize), true) => int8_domain = true,
            // A stub left in float quantizes nothing: what follows must be float too.
            (Some(Boundary::Quantize), false) => {}
            (None, true) if !int8_domain => {
                return misplaced(
                    "is quantized, but its input is float here: put a QuantStub before it",
                );
            }
            // Layers without qparams of their own (max pooling) run in either domain.
            (None, false) if layer.is_converted() => {}
            (None, false) if int8_domain => {
                return misplaced(
                    "is left in float (its qconfig is None), but its input is int8 here: put a \
                     DeQuantStub before it",
                );
            }
            (None, _) => {}
        }
        match prepared {
            true => layer.convert(input, engine),
            false => Ok(()),
        }
    })
}

/// Whether `model` is converted (or loaded from an int8 checkpoint): every layer that was
/// prepared has its int8 form, and at least one layer has one; otherwise the path of the first
/// layer without.
pub fn check_converted<M: Quantizable>(model: &M) -> Result<()> {
    let mut first_float = None;
    let mut any = false;
    model.visit_layers_ref(&mut |path, layer| {
        any |= layer.int8_output().is_some();
        if !layer.is_converted() {
            if layer.output_observer().is_some() {
                // Prepared, so meant to be int8.
                return Err(Error::stage(StageProblem::NotConverted).at_layer(path));
            }
            first_float.get_or_insert_with(|| path.to_string());
        }
        Ok(())
    })?;
    match (any, first_float) {
        (true, _) => Ok(()),
        (false, Some(path)) => Err(Error::stage(StageProblem::NotConverted).at_layer(&path)),
        (false, None) => Err(Error::Quant("the model has no quantizable layer".into())),
    }
}

/// The engine of a converted model (its first layer's), or an error naming the first layer
/// without an int8 form.
pub fn converted_engine<M: Quantizable>(model: &M) -> Result<Engine> {
    check_converted(model)?;
    let mut engine = None;
    model.visit_layers_ref(&mut |_, layer| {
        engine = engine.or(layer.int8_output().map(|out| out.engine));
        Ok(())
    })?;
    engine.ok_or_else(|| Error::Quant("the model has no quantizable layer".into()))
}

/// Frees the float weights of a converted model's int8 layers: each one's float weight and
/// bias, batch norm and weight fake-quant ([`QuantLayer::strip_float`]). PyTorch's converted
/// model holds no float weights; this one keeps them until stripped, so that its float and QDQ
/// forms stay usable after `convert` (ONNX export, comparing with the fake-quant forward).
/// Layers kept in float (`qconfig = None`) keep theirs; observers stay (the output qparams are
/// the int8 form's already).
///
/// A stripped model still runs its int8 forward (bit for bit as before), saves and loads its
/// int8 state dict and exports int8 ONNX. The float and QDQ ONNX forms, `convert` again and
/// `convert` again return [`StageProblem::FloatStripped`] naming the layer, and its
/// float forward runs each stripped layer as PyTorch's reference quantized module
/// (`torch.ao.nn.quantized.reference`: the dequantized int8 weight in a float convolution or
/// matrix product); the model no longer trains. Errors if the model is not converted (nothing
/// is freed then).
pub fn strip_float<M: Quantizable>(model: &mut M) -> Result<()> {
    check_converted(model)?;
    model.visit_layers(&mut |_, layer| {
        layer.strip_float();
        Ok(())
    })
}
