//! The stages of weighted layers ([`ConvBnAct`](super::ConvBnAct),
//! [`LinearBnAct`](super::LinearBnAct), or a weighted layer of yours), written once: a
//! [`WeightedLayer`] is a [`QuantLayer`]. Fusion checks, the weight fake-quant and output
//! post-process `prepare` attaches, the weight quantization of `convert` (`_quantize_weight`),
//! the int8 state-dict entries, the QAT form of their ONNX weights, and `strip_float` (the
//! float weights freed, the float forward on the dequantized int8 ones).

use burn::tensor::{Device, Tensor, TensorData};

use super::activation::Activation;
use super::batch_norm::BatchNorm2d;
use super::bn_folding::fold_with_scale;
use super::layer::{PrepareMode, QuantLayer};
use super::post_process::ActivationPostProcess;
use super::qbatch::QuantizedOutput;
use super::stage::Fusion;
use crate::error::StageProblem;
use crate::int8::{Engine, QParamsPt, QWeight};
use crate::onnx::parts::{fake_quant_weight, missing_weight_fq};
use crate::onnx::{ActQ, Bias, BnParams, Builder, ExportKind, LayerParts, OnnxActivation};
use crate::quant::observer::tensor_to_vec;
use crate::quant::{FakeQuantize, Observer, QConfig};
use crate::state::{Entries, StateDict, put_float, put_output, put_weight_and_bias};
use crate::{Error, Result};

/// A layer with a weight, maybe a batch norm, an activation and an output post-process. What
/// differs between such layers is here; the stages they share come with it, as its
/// [`QuantLayer`] implementation.
pub trait WeightedLayer {
    /// The layer's kind as users name it (`"ConvBnAct"`).
    fn kind(&self) -> &'static str;

    /// The stage state, borrowed from the layer's fields.
    fn weighted(&mut self) -> Weighted<'_>;

    /// The output post-process.
    fn output_post_process(&self) -> &ActivationPostProcess;

    /// Folds an eval-mode batch norm into the weight and bias (`fuse_modules`).
    fn fold_bn(&mut self, bn: &BatchNorm2d);

    /// Builds and keeps the int8 form of the prepared layer (`from_float`).
    fn convert_weights(&mut self, input: QParamsPt, engine: Engine) -> Result<()>;

    /// The int8 form's weight, bias and output, once converted.
    fn int8_weights(&self) -> Option<(&QWeight, Option<&[f32]>, QuantizedOutput)>;

    /// The shape of the int8 weight, output channels first (`[out, in/groups, kh, kw]`).
    fn int8_weight_shape(&self) -> Vec<usize>;

    /// Whether the layer still has its batch norm (not folded by fusion).
    fn has_batch_norm(&self) -> bool;

    /// The float weight (output channels first, PyTorch's layout) and bias of a layer kept in
    /// float, for its state-dict entries (after fusion: the caller refuses an unfused one).
    fn float_weights(&self) -> (Vec<f32>, Option<Vec<f32>>);

    /// Takes a float-kept layer's saved weight and bias (batch norm folded into them).
    fn install_float(&mut self, weight: Vec<f32>, bias: Option<Vec<f32>>) -> Result<()>;

    /// Whether [`Self::free_float_weights`] freed the float weight. The default: never.
    fn is_stripped(&self) -> bool {
        false
    }

    /// `strip_float` on a converted layer: frees the float weight and bias and says whether it
    /// did (its float forward then runs the int8 form's weights dequantized; `strip_float`
    /// then drops the batch norm and weight fake-quant too). The default keeps them, and
    /// `strip_float` leaves the layer whole.
    fn free_float_weights(&mut self) -> bool {
        false
    }

    /// Builds and keeps the int8 form from a loaded weight, bias and output qparams.
    fn install_int8(
        &mut self,
        weight: QWeight,
        bias: Option<Vec<f32>>,
        input: QParamsPt,
        output: QParamsPt,
        engine: Engine,
    ) -> Result<()>;
}

impl<L: WeightedLayer> QuantLayer for L {
    fn kind(&self) -> &'static str {
        WeightedLayer::kind(self)
    }

    fn fuse(&mut self, fusion: Fusion) -> Result<()> {
        let weighted = self.weighted();
        weighted.check_fusable(fusion)?;
        *weighted.fusion = fusion;
        let folded = match fusion {
            Fusion::Eval => weighted.bn.take(),
            // The batch norm trains with the layer: its freeze is saved from now on.
            Fusion::Qat => {
                if let Some(bn) = weighted.bn.as_mut() {
                    bn.track_freeze(&weighted.device);
                }
                None
            }
            _ => None,
        };
        if let Some(bn) = folded {
            self.fold_bn(&bn);
        }
        Ok(())
    }

    fn replace_relu(&mut self) {
        self.weighted().replace_relu();
    }

    fn prepare(&mut self, qconfig: &QConfig, mode: PrepareMode, _: &Device) -> Result<()> {
        self.weighted().prepare(qconfig, mode)
    }

    fn for_each_fake_quant(&mut self, f: &mut dyn FnMut(&mut FakeQuantize)) {
        self.weighted().for_each_fake_quant(f);
    }

    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d)) {
        self.weighted().for_each_batch_norm(f);
    }

    fn output_observer(&self) -> Option<&Observer> {
        self.output_post_process().observer()
    }

    fn convert(&mut self, input: QParamsPt, engine: Engine) -> Result<()> {
        if self.is_stripped() {
            return Err(Error::stage(StageProblem::FloatStripped));
        }
        self.convert_weights(input, engine)
    }

    fn strip_float(&mut self) {
        // A layer kept in float (or not converted yet) keeps its float weights.
        if self.int8_weights().is_none() || !self.free_float_weights() {
            return;
        }
        let weighted = self.weighted();
        *weighted.bn = None;
        *weighted.weight_fake_quant = None;
    }

    fn int8_output(&self) -> Option<QuantizedOutput> {
        self.int8_weights().map(|(_, _, output)| output)
    }

    fn int8_state_keys(&self) -> &'static [&'static str] {
        &["weight", "bias", "scale", "zero_point"]
    }

    fn int8_state(&self, path: &str, state: &mut StateDict) -> Result<()> {
        if let Some((weight, bias, output)) = self.int8_weights() {
            put_weight_and_bias(state, path, weight, bias);
            put_output(state, path, output.qparams);
        } else if self.output_post_process().observer().is_none() {
            if self.has_batch_norm() {
                return Err(Error::stage(StageProblem::Unsupported(
                    "is kept in float with its batch norm unfused: fuse the model before saving"
                        .into(),
                )));
            }
            let (weight, bias) = self.float_weights();
            put_float(
                state,
                &format!("{path}.weight"),
                &self.int8_weight_shape(),
                weight,
            );
            if let Some(bias) = bias {
                put_float(state, &format!("{path}.bias"), &[bias.len()], bias);
            }
        }
        Ok(())
    }

    fn load_int8_state(
        &mut self,
        path: &str,
        entries: &Entries<'_>,
        input: QParamsPt,
        engine: Engine,
    ) -> Result<()> {
        let shape = self.int8_weight_shape();
        if let Some(weight) = entries.float(&format!("{path}.weight"), &shape)? {
            // A layer the saved model kept in float.
            let bias = entries.bias(path, shape[0])?;
            return self.install_float(weight, bias);
        }
        let weight = entries.weight(path, &shape)?;
        let bias = entries.bias(path, weight.out_channels())?;
        let output = entries.output(path)?;
        self.install_int8(weight, bias, input, output, engine)
    }
}

/// The stage state of a weighted layer, borrowed from its fields.
pub struct Weighted<'a> {
    /// The layer's kind (`"convolution"`), for messages.
    pub kind: &'static str,
    /// How far fusion went.
    pub fusion: &'a mut Fusion,
    /// The batch norm after it, if any.
    pub bn: &'a mut Option<BatchNorm2d>,
    /// The weight's fake-quant (observer-only after `prepare`).
    pub weight_fake_quant: &'a mut Option<FakeQuantize>,
    /// The output post-process.
    pub post: &'a mut ActivationPostProcess,
    /// The activation.
    pub activation: &'a mut Activation,
    /// Output channels (per-channel weight schemes quantize along them).
    pub out_channels: usize,
    /// The weight's device.
    pub device: Device,
}

impl Weighted<'_> {
    /// Checks the layer can be fused as `fusion` asks: not fused yet, no ReLU6 and, for
    /// inference, no batch norm still training.
    pub fn check_fusable(&self, fusion: Fusion) -> Result<()> {
        if *self.fusion != Fusion::None {
            return Err(Error::stage(StageProblem::AlreadyFused { kind: self.kind }));
        }
        if *self.activation == Activation::Relu6 {
            return Err(Error::stage(StageProblem::Unsupported(format!(
                "a {} followed by ReLU6 cannot be fused; call replace_relu first",
                self.kind
            ))));
        }
        let bn_training = self.bn.as_ref().is_some_and(|bn| bn.training());
        if fusion == Fusion::Eval && bn_training && self.device.is_autodiff() {
            return Err(Error::stage(StageProblem::Unsupported(
                "fuse_modules folds batch norm for inference and needs an eval-mode model (call \
                 .valid()); use fuse_modules_qat for training"
                    .into(),
            )));
        }
        Ok(())
    }

    /// `_replace_relu`.
    pub fn replace_relu(&mut self) {
        if *self.activation == Activation::Relu6 {
            *self.activation = Activation::Relu;
        }
    }

    /// Attaches the weight fake-quant and the output observer / fake-quant, both on the
    /// weight's device. A layer followed by batch norm must be fused for `mode` first: batch
    /// norm has no int8 form on its own.
    pub fn prepare(&mut self, qconfig: &QConfig, mode: PrepareMode) -> Result<()> {
        if self.bn.is_some() && *self.fusion != mode.fusion() {
            let how = match mode {
                PrepareMode::Qat => "fuse_modules_qat (model.fuse_model(Some(true)))",
                PrepareMode::Ptq => "fuse_modules (model.fuse_model(Some(false)))",
            };
            return Err(Error::stage(StageProblem::NotFused {
                kind: self.kind,
                how,
            }));
        }
        self.post.ensure_unprepared()?;
        let mut weight = qconfig
            .weight
            .fake_quantize()
            .init(self.out_channels, &self.device)?;
        if mode == PrepareMode::Ptq {
            // PyTorch builds the weight observer at convert (`qconfig.weight()` in
            // `from_float`); here it is attached now, observing only (weights do not change
            // during calibration, so its min/max are the ones a fresh observer would see).
            weight.disable_fake_quant();
        }
        *self.weight_fake_quant = Some(weight);
        *self.post = ActivationPostProcess::prepared(qconfig, mode, &self.device)?;
        Ok(())
    }

    /// The QAT switches' targets.
    pub fn for_each_fake_quant(&mut self, f: &mut dyn FnMut(&mut FakeQuantize)) {
        if let Some(wfq) = self.weight_fake_quant.as_mut() {
            f(wfq);
        }
        if let Some(fq) = self.post.fake_quantize_mut() {
            f(fq);
        }
    }

    /// `freeze_bn_stats`' target.
    pub fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d)) {
        if let Some(bn) = self.bn.as_mut() {
            f(bn);
        }
    }
}

/// The weight fake-quant and the calibrated output observer of a prepared layer, or a stage
/// error naming what is missing.
pub fn prepared_parts<'a>(
    weight_fake_quant: &'a Option<FakeQuantize>,
    post: &'a ActivationPostProcess,
    kind: &str,
) -> Result<(&'a FakeQuantize, &'a Observer)> {
    let wfq = weight_fake_quant.as_ref().ok_or_else(|| {
        Error::stage(StageProblem::NotPrepared {
            what: format!("convert needs a weight fake-quant on every {kind} (prepare_qat first)"),
        })
    })?;
    Ok((wfq, post.calibrated_observer(kind)?))
}

/// PyTorch's `weight_post_process(mod.weight)` then `_quantize_weight`: the weight fake-quant
/// observes the (folded) weight once more, and its qparams (Python formula, or LSQ's learned
/// ones) quantize it to qint8, clamped to the fake-quant's range when that is narrower
/// (`_clamp_weights`: 4-bit weights stay in `[-8, 7]`). `weight` has the output channels first.
pub fn quantize_weight<const D: usize>(wfq: &FakeQuantize, weight: Tensor<D>) -> Result<QWeight> {
    let weight = weight.detach();
    let _ = wfq.forward(weight.clone());
    let wqp = wfq.calculate_qparams()?;
    let shape = weight.dims();
    let w_host = tensor_to_vec(weight);
    let zero_points: Vec<i32> = wqp.zero_point.iter().map(|&z| z as i32).collect();
    let qweight = if wqp.scale.len() == 1 {
        QWeight::quantize_per_tensor(&w_host, &shape, wqp.scale[0], zero_points[0])
    } else {
        QWeight::quantize_per_channel(&w_host, &shape, &wqp.scale, &zero_points)
    }?;
    Ok(qweight.clamped(wfq.quant_min(), wfq.quant_max()))
}

/// The ReLU a converted layer fuses, or an error for ReLU6 (which int8 layers do not have).
pub fn fused_relu(activation: Activation) -> Result<bool> {
    match activation {
        Activation::Relu => Ok(true),
        Activation::Identity => Ok(false),
        Activation::Relu6 => Err(Error::stage(StageProblem::Unsupported(
            "ends in ReLU6, which has no int8 form: call replace_relu first".into(),
        ))),
    }
}

/// The graph's name for an activation.
pub fn onnx_activation(activation: Activation) -> OnnxActivation {
    match activation {
        Activation::Identity => OnnxActivation::Identity,
        Activation::Relu => OnnxActivation::Relu,
        Activation::Relu6 => OnnxActivation::Relu6,
    }
}

/// The values of an eval-mode batch norm node.
pub fn bn_params(bn: &BatchNorm2d) -> BnParams {
    BnParams {
        weight: tensor_to_vec(bn.weight.val()),
        bias: tensor_to_vec(bn.bias.val()),
        running_mean: tensor_to_vec(bn.running_mean()),
        running_var: tensor_to_vec(bn.running_var()),
        eps: bn.eps,
    }
}

/// What a QAT conv or linear layer exports from, its weight with output channels first.
pub struct QatWeights<'a, const D: usize> {
    /// The weight fake-quant.
    pub weight_fake_quant: Option<&'a FakeQuantize>,
    /// The float weight, `[out, ...]`.
    pub weight: Tensor<D>,
    /// The float bias.
    pub bias: Option<Tensor<1>>,
    /// The batch norm.
    pub bn: Option<&'a BatchNorm2d>,
    /// How far fusion went.
    pub fusion: Fusion,
    /// The activation.
    pub activation: Activation,
}

impl<const D: usize> QatWeights<'_, D> {
    /// The QDQ form's parts. With BN in QAT fusion, the eval forward
    /// `bn(conv(x, wfq(W·s)) / s + b)` with `s = γ/√(running_var + ε)` is exactly the layer
    /// with weight `wfq(W·s)` and bias `(b − μ)·s + β`.
    pub fn parts(self, path: &str, output: Option<ActQ>) -> Result<LayerParts> {
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
            bn: bn.map(bn_params),
            activation: onnx_activation(self.activation),
            output,
        })
    }
}

/// The form a weighted layer is exported in ([`Builder::layer_form`]); a float or QDQ form of
/// a layer whose float weights `strip_float` freed is an error naming it.
pub fn export_form(
    graph: &Builder,
    path: &str,
    prepared: bool,
    converted: bool,
    stripped: bool,
) -> Result<ExportKind> {
    match graph.layer_form(path, prepared, converted)? {
        ExportKind::Int8 => Ok(ExportKind::Int8),
        _ if stripped => Err(Error::stage(StageProblem::FloatStripped).at_layer(path)),
        form => Ok(form),
    }
}

/// The float forward's weight and bias of a stripped layer: the int8 ones dequantized
/// (`w = (q − zero_point) · scale`, per channel or per tensor), as PyTorch's reference
/// quantized modules (`torch.ao.nn.quantized.reference`) compute, on `device`. The weight has
/// the int8 weight's shape (output channels first).
pub fn dequantized_weights<const D: usize>(
    weight: &QWeight,
    bias: Option<&[f32]>,
    device: &Device,
) -> (Tensor<D>, Option<Tensor<1>>) {
    let w = Tensor::from_data(TensorData::new(weight.dequantize(), weight.shape()), device);
    let b = bias.map(|b| Tensor::from_data(TensorData::new(b.to_vec(), [b.len()]), device));
    (w, b)
}
