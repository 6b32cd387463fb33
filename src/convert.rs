//! `convert`: every prepared (PTQ) or fake-quantized (QAT) layer of a model gets its int8
//! form, as `torch.ao.quantization.convert` does with each module's `from_float` (torch
//! 2.5.1). The layers convert themselves ([`QuantLayer::convert`]); this is the walk. Qparams
//! come from the observers with the Python formula (`calculate_qparams`), as in PyTorch.

use crate::error::StageProblem;
use crate::int8::{Engine, QParamsPt};
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
/// `MobileNetV2::forward_int8`); the float parameters stay, so the float forward still works.
///
/// `engine` picks whose integer arithmetic the kernels reproduce: `qnnpack` or `x86`. Errors
/// (convert before prepare or calibration, an unsupported layer) name the layer's path and
/// leave the model unchanged.
pub fn convert<M: Quantizable + Clone>(model: &mut M, engine: Engine) -> Result<()> {
    build_int8(model, |_, layer, input| layer.convert(input, engine))
}

/// Whether every quantizable layer of `model` has its int8 form (the model was converted or
/// loaded from an int8 checkpoint), or the path of the first one that has not.
pub fn check_converted<M: Quantizable>(model: &M) -> Result<()> {
    model.visit_layers_ref(&mut |path, layer| match layer.is_converted() {
        true => Ok(()),
        false => Err(Error::stage(StageProblem::NotConverted).at_layer(path)),
    })
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
