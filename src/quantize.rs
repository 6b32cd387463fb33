//! The eager-mode workflow over a [`Quantizable`] model, as `torch.ao.quantization`:
//! [`replace_relu`], [`prepare`] (PTQ observers), [`prepare_qat`] (fake-quants), and the QAT
//! schedule switches ([`disable_observer`], [`freeze_bn_stats`], ...). Fusion is in
//! [`crate::fuse`].

use burn::tensor::Device;

use crate::nn::{
    Activation, ActivationPostProcess, BatchNorm2d, ConvBnAct, FloatFunctional, Fusion,
    LinearBnAct, QuantLayer, QuantStub, Quantizable,
};
use crate::quant::{FakeQuantize, QConfig};
use crate::{Error, Result};

/// Replaces every ReLU6 by ReLU (torchvision's `_replace_relu`): int8 fusion patterns and
/// kernels know ReLU only, and after QAT the activation range is learned anyway.
pub fn replace_relu<M: Quantizable>(model: &mut M) -> Result<()> {
    model.visit_layers(&mut |_, layer| {
        let activation = match layer {
            QuantLayer::Conv(c) => &mut c.activation,
            QuantLayer::Linear(l) => &mut l.activation,
            QuantLayer::Quant(_) | QuantLayer::Functional(_) => return Ok(()),
        };
        if *activation == Activation::Relu6 {
            *activation = Activation::Relu;
        }
        Ok(())
    })
}

/// A layer's weight, BN, fusion state and post-process, whatever its kind.
struct LayerParts<'a> {
    kind: &'static str,
    fusion: Fusion,
    has_bn: bool,
    out_channels: usize,
    device: Device,
    weight_fake_quant: &'a mut Option<FakeQuantize>,
    post: &'a mut ActivationPostProcess,
}

fn conv_parts(c: &mut ConvBnAct) -> LayerParts<'_> {
    LayerParts {
        kind: "convolution",
        fusion: c.fusion,
        has_bn: c.bn.is_some(),
        out_channels: c.out_channels(),
        device: c.conv.weight.device(),
        weight_fake_quant: &mut c.weight_fake_quant,
        post: &mut c.activation_post_process,
    }
}

fn linear_parts(l: &mut LinearBnAct) -> LayerParts<'_> {
    LayerParts {
        kind: "linear layer",
        fusion: l.fusion,
        has_bn: l.bn.is_some(),
        out_channels: l.out_features(),
        device: l.linear.weight.device(),
        weight_fake_quant: &mut l.weight_fake_quant,
        post: &mut l.activation_post_process,
    }
}

fn ensure_unprepared(post: &ActivationPostProcess) -> Result<()> {
    match post {
        ActivationPostProcess::Identity(_) => Ok(()),
        _ => Err(Error::Quant(
            "the model is already prepared (a layer already has an observer or fake-quant)".into(),
        )),
    }
}

/// Checks that every layer can be prepared (`fusion` for conv/linear + BN, nothing attached
/// yet), so that a failing `prepare` leaves the model untouched.
fn check_preparable<M: Quantizable>(model: &mut M, fusion: Fusion) -> Result<()> {
    model.visit_layers(&mut |_, layer| {
        let parts = match layer {
            QuantLayer::Quant(QuantStub {
                activation_post_process: post,
                ..
            })
            | QuantLayer::Functional(FloatFunctional {
                activation_post_process: post,
                ..
            }) => {
                return ensure_unprepared(post);
            }
            QuantLayer::Conv(c) => conv_parts(c),
            QuantLayer::Linear(l) => linear_parts(l),
        };
        if parts.has_bn && parts.fusion != fusion {
            let how = match fusion {
                Fusion::Qat => "fuse_modules_qat (model.fuse_model(Some(true)))",
                _ => "fuse_modules (model.fuse_model(Some(false)))",
            };
            return Err(Error::Quant(format!(
                "a {} followed by batch norm must be fused with {how} before preparing",
                parts.kind
            )));
        }
        ensure_unprepared(parts.post)
    })
}

/// Attaches observers (PTQ calibration, `torch.ao.quantization.prepare`): every layer output,
/// `QuantStub` and `FloatFunctional` gets `qconfig.activation`'s observer, every conv/linear
/// weight `qconfig.weight`'s (observing only; its qparams quantize the weight at convert). Convolutions followed by batch norm must be fused first
/// ([`crate::fuse::fuse_modules`]), because batch norm has no int8 form on its own. On error
/// the model is unchanged.
pub fn prepare<M: Quantizable>(model: &mut M, qconfig: &QConfig, device: &Device) -> Result<()> {
    check_preparable(model, Fusion::Eval)?;
    let activation = qconfig.activation.observer().clone();
    activation.validate()?;
    let weight = qconfig.weight.fake_quantize();
    weight.validate()?;
    model.visit_layers(&mut |_, layer| {
        let parts = match layer {
            QuantLayer::Quant(QuantStub {
                activation_post_process: post,
                ..
            })
            | QuantLayer::Functional(FloatFunctional {
                activation_post_process: post,
                ..
            }) => {
                *post = ActivationPostProcess::Observer(activation.init(1, device)?);
                return Ok(());
            }
            QuantLayer::Conv(c) => conv_parts(c),
            QuantLayer::Linear(l) => linear_parts(l),
        };
        // PyTorch builds the weight observer at convert (`qconfig.weight()` in `from_float`);
        // here it is attached now, observing only (weights do not change during calibration,
        // so its min/max are the ones a fresh observer would see at convert).
        let mut weight_observer = weight.init(parts.out_channels, &parts.device)?;
        weight_observer.disable_fake_quant();
        *parts.weight_fake_quant = Some(weight_observer);
        *parts.post = ActivationPostProcess::Observer(activation.init(1, &parts.device)?);
        Ok(())
    })
}

/// Attaches fake-quants for quantization-aware training (`torch.ao.quantization.prepare_qat`):
/// `qconfig.weight` on every conv/linear weight (per output channel where the scheme says so),
/// `qconfig.activation` on every layer output, `QuantStub` and `FloatFunctional`. Conv + BN
/// must be fused for QAT first ([`crate::fuse::fuse_modules_qat`]). On error the model is
/// unchanged.
pub fn prepare_qat<M: Quantizable>(
    model: &mut M,
    qconfig: &QConfig,
    device: &Device,
) -> Result<()> {
    check_preparable(model, Fusion::Qat)?;
    let activation = qconfig.activation.fake_quantize();
    let weight = qconfig.weight.fake_quantize();
    // Build everything first: a bad qconfig must not leave a half-prepared model.
    activation.validate()?;
    weight.validate()?;
    model.visit_layers(&mut |_, layer| {
        let parts = match layer {
            QuantLayer::Quant(QuantStub {
                activation_post_process: post,
                ..
            })
            | QuantLayer::Functional(FloatFunctional {
                activation_post_process: post,
                ..
            }) => {
                *post = ActivationPostProcess::FakeQuantize(activation.init(1, device)?);
                return Ok(());
            }
            QuantLayer::Conv(c) => conv_parts(c),
            QuantLayer::Linear(l) => linear_parts(l),
        };
        *parts.weight_fake_quant = Some(weight.init(parts.out_channels, &parts.device)?);
        *parts.post = ActivationPostProcess::FakeQuantize(activation.init(1, &parts.device)?);
        Ok(())
    })
}

/// Calls `f` on every fake-quant of the model (weights and outputs).
pub fn for_each_fake_quant<M: Quantizable>(model: &mut M, mut f: impl FnMut(&mut FakeQuantize)) {
    let _ = model.visit_layers(&mut |_, layer| {
        let (wfq, post) = match layer {
            QuantLayer::Conv(c) => (c.weight_fake_quant.as_mut(), &mut c.activation_post_process),
            QuantLayer::Linear(l) => (l.weight_fake_quant.as_mut(), &mut l.activation_post_process),
            QuantLayer::Quant(QuantStub {
                activation_post_process: post,
                ..
            })
            | QuantLayer::Functional(FloatFunctional {
                activation_post_process: post,
                ..
            }) => (None, post),
        };
        wfq.into_iter().for_each(&mut f);
        post.fake_quantize_mut().into_iter().for_each(&mut f);
        Ok(())
    });
}

/// Calls `f` on every batch norm of the model.
pub fn for_each_batch_norm<M: Quantizable>(model: &mut M, mut f: impl FnMut(&mut BatchNorm2d)) {
    let _ = model.visit_layers(&mut |_, layer| {
        let bn = match layer {
            QuantLayer::Conv(c) => c.bn.as_mut(),
            QuantLayer::Linear(l) => l.bn.as_mut(),
            QuantLayer::Quant(_) | QuantLayer::Functional(_) => None,
        };
        bn.into_iter().for_each(&mut f);
        Ok(())
    });
}

/// Stops range collection everywhere (`model.apply(torch.ao.quantization.disable_observer)`).
pub fn disable_observer<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::disable_observer);
}

/// Resumes range collection everywhere (`enable_observer`).
pub fn enable_observer<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::enable_observer);
}

/// Turns fake quantization off everywhere (`disable_fake_quant`).
pub fn disable_fake_quant<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::disable_fake_quant);
}

/// Turns fake quantization on everywhere (`enable_fake_quant`).
pub fn enable_fake_quant<M: Quantizable>(model: &mut M) {
    for_each_fake_quant(model, FakeQuantize::enable_fake_quant);
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
