//! The eager-mode workflow over a [`Quantizable`] model, as `torch.ao.quantization`:
//! [`replace_relu`], [`prepare`] (PTQ observers), [`prepare_qat`] (fake-quants), and the QAT
//! schedule switches ([`disable_observer`], [`freeze_bn_stats`], ...). Each is a walk that asks
//! every layer to change itself ([`QuantLayer`]); fusion is in [`crate::fuse`].

use burn::module::Module;
use burn::tensor::Device;

use crate::Result;
use crate::nn::{BatchNorm2d, PrepareMode, QuantLayer, Quantizable};
use crate::quant::{FakeQuantize, FixedQParamsFakeQuantize, QConfigMapping};

/// Runs a stage on a copy of `model` and keeps it only if the stage succeeds: on error the
/// model is unchanged, whichever layer failed.
pub(crate) fn on_copy<M: Clone>(
    model: &mut M,
    stage: impl FnOnce(&mut M) -> Result<()>,
) -> Result<()> {
    let mut copy = model.clone();
    stage(&mut copy)?;
    *model = copy;
    Ok(())
}

/// Folds every pending running-state update of `model` into its value (batch-norm running
/// statistics, observer ranges, fake-quant qparams), so that a record taken now holds them.
///
/// Burn's `RunningState` keeps a thread's latest update aside until the next synchronising
/// read, and a record (`save_into`, `collect`) reads the value without it: a model saved right
/// after a training step would be saved one batch-norm update behind. Call this before saving a
/// model in training; the crate's checkpoints do. (`valid()` synchronises, as here.)
pub fn commit_running_state<M: Module>(model: &M) {
    let _ = model.valid();
}

/// Whether any layer of `model` is prepared (has an observer or a fake-quant).
pub fn is_prepared<M: Quantizable>(model: &M) -> bool {
    let mut prepared = false;
    let _ = model.visit_layers_ref(&mut |_, layer| {
        prepared |= layer.output_observer().is_some();
        Ok(())
    });
    prepared
}

/// Replaces every ReLU6 by ReLU (torchvision's `_replace_relu`): int8 fusion patterns and
/// kernels know ReLU only, and after QAT the activation range is learned anyway.
pub fn replace_relu<M: Quantizable>(model: &mut M) -> Result<()> {
    model.visit_layers(&mut |_, layer| {
        layer.replace_relu();
        Ok(())
    })
}

fn prepare_all<M: Quantizable + Clone>(
    model: &mut M,
    qconfig: QConfigMapping,
    mode: PrepareMode,
    device: &Device,
) -> Result<()> {
    // A bad qconfig is an error before any layer is looked at.
    for q in qconfig.qconfigs() {
        q.activation.fake_quantize().validate()?;
        q.weight.fake_quantize().validate()?;
    }
    on_copy(model, |m| {
        m.visit_layers(&mut |path, layer: &mut dyn QuantLayer| {
            match qconfig.qconfig_for(path, layer.kind()) {
                Some(q) => layer.prepare(q, mode, device).map_err(|e| e.at_layer(path)),
                // `qconfig = None`: the layer stays float.
                None => Ok(()),
            }
        })
    })
}

/// Attaches observers (PTQ calibration, `torch.ao.quantization.prepare`): every layer output,
/// `QuantStub` and `FloatFunctional` gets its qconfig's activation observer, every conv/linear
/// weight its weight observer (observing only; its qparams quantize the weight at convert).
/// `qconfig` is one [`QConfig`](crate::quant::QConfig) for every layer, or a
/// [`QConfigMapping`] (per kind, per module path, `None` to leave a layer in float).
/// Convolutions followed by batch norm must be fused first ([`crate::fuse::fuse_modules`]),
/// because batch norm has no int8 form on its own. On error the model is unchanged.
pub fn prepare<M: Quantizable + Clone>(
    model: &mut M,
    qconfig: impl Into<QConfigMapping>,
    device: &Device,
) -> Result<()> {
    prepare_all(model, qconfig.into(), PrepareMode::Ptq, device)
}

/// Attaches fake-quants for quantization-aware training (`torch.ao.quantization.prepare_qat`):
/// the qconfig's weight fake-quant on every conv/linear weight (per output channel where the
/// scheme says so), its activation fake-quant on every layer output, `QuantStub` and
/// `FloatFunctional`; `qconfig` as for [`prepare`]. Conv + BN must be fused for QAT first
/// ([`crate::fuse::fuse_modules_qat`]). On error the model is unchanged.
pub fn prepare_qat<M: Quantizable + Clone>(
    model: &mut M,
    qconfig: impl Into<QConfigMapping>,
    device: &Device,
) -> Result<()> {
    prepare_all(model, qconfig.into(), PrepareMode::Qat, device)
}

/// Calls `f` on every fake-quant of the model (weights and outputs).
pub fn for_each_fake_quant<M: Quantizable>(model: &mut M, mut f: impl FnMut(&mut FakeQuantize)) {
    let _ = model.visit_layers(&mut |_, layer| {
        layer.for_each_fake_quant(&mut f);
        Ok(())
    });
}

/// Calls `f` on every batch norm of the model.
pub fn for_each_batch_norm<M: Quantizable>(model: &mut M, mut f: impl FnMut(&mut BatchNorm2d)) {
    let _ = model.visit_layers(&mut |_, layer| {
        layer.for_each_batch_norm(&mut f);
        Ok(())
    });
}

/// Calls `f` on every fixed-qparams fake-quant of the model (hardsigmoid outputs in QAT).
pub fn for_each_fixed_fake_quant<M: Quantizable>(
    model: &mut M,
    mut f: impl FnMut(&mut FixedQParamsFakeQuantize),
) {
    let _ = model.visit_layers(&mut |_, layer| {
        layer.for_each_fixed_fake_quant(&mut f);
        Ok(())
    });
}

/// Stops range collection everywhere (`model.apply(torch.ao.quantization.disable_observer)`).
pub fn disable_observer<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::disable_observer);
    for_each_fixed_fake_quant(model, |fq| fq.set_observer(false));
}

/// Resumes range collection everywhere (`enable_observer`).
pub fn enable_observer<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::enable_observer);
    for_each_fixed_fake_quant(model, |fq| fq.set_observer(true));
}

/// Turns fake quantization off everywhere (`disable_fake_quant`).
pub fn disable_fake_quant<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::disable_fake_quant);
    for_each_fixed_fake_quant(model, FixedQParamsFakeQuantize::disable_fake_quant);
}

/// Turns fake quantization on everywhere (`enable_fake_quant`).
pub fn enable_fake_quant<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::enable_fake_quant);
    for_each_fixed_fake_quant(model, FixedQParamsFakeQuantize::enable_fake_quant);
}

/// LSQ fake-quants learn their scale and zero-point from now on, starting from the observers'
/// last estimates (`model.apply(lambda m: m.enable_param_learning() if isinstance(m,
/// _LearnableFakeQuantize) else None)`); plain fake-quants are left as they are.
pub fn enable_param_learning<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::enable_param_learning);
}

/// LSQ fake-quants take scale and zero-point from their observers, learning nothing
/// (`enable_static_estimate`); plain fake-quants are left as they are.
pub fn enable_static_estimate<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::enable_static_estimate);
}

/// LSQ fake-quants only observe; their forward is the identity (`enable_static_observation`);
/// plain fake-quants are left as they are.
pub fn enable_static_observation<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::enable_static_observation);
}

/// Freezes every batch norm's statistics (`torch.ao.nn.intrinsic.qat.freeze_bn_stats`): the
/// running mean and variance are used and no longer updated.
pub fn freeze_bn_stats<M: Quantizable>(model: &mut M) {
    for_each_batch_norm(model, BatchNorm2d::freeze_stats);
}

/// Resumes batch-norm statistics updates (`update_bn_stats`).
pub fn update_bn_stats<M: Quantizable>(model: &mut M) {
    for_each_batch_norm(model, BatchNorm2d::update_stats);
}
