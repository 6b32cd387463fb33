//! Activation post-processes: what a quantizable layer does to its output, swapped by
//! `prepare` (observer) and `prepare_qat` (fake-quant) without touching the user's forward —
//! PyTorch's `activation_post_process` attribute.

use burn::module::Module;
use burn::nn::Identity;
use burn::tensor::Tensor;

use super::activation::Activation;
use super::layer::PrepareMode;
use crate::error::StageProblem;
use crate::int8::QParamsPt;
use crate::onnx::{ActQ, Builder, ExportKind};
use crate::quant::{FakeQuantize, Observer, QConfig, QParams};
use crate::{Error, Result};

/// Something applied to a layer's output. Implement it on your own [`Module`] to plug a custom
/// post-process into [`FloatFunctional`](super::FloatFunctional) or the stubs — PyTorch's
/// official hook for custom operators.
///
/// ```
/// use burn::module::Module;
/// use burn::tensor::Tensor;
/// use burn_qat::nn::{FloatFunctional, PostProcess};
///
/// /// Clips every output to [-1, 1] (a toy "custom operator").
/// #[derive(Module, Debug)]
/// struct Clip;
///
/// impl PostProcess for Clip {
///     fn post_process<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
///         x.clamp(-1.0, 1.0)
///     }
/// }
///
/// let add = FloatFunctional::with_post_process(Clip);
/// let device = burn::tensor::Device::flex();
/// let y = add.add(Tensor::<1>::ones([2], &device), Tensor::<1>::ones([2], &device));
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
/// ```
pub trait PostProcess: Module + Clone {
    /// Applies the post-process to `x`.
    fn post_process<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;

    /// The output quantization the post-process stands for in `graph`'s export form, written as
    /// the layer at `path`'s; `None` (the default) writes no node for it.
    fn onnx_output(&self, graph: &mut Builder, path: &str) -> Result<Option<ActQ>> {
        let _ = (graph, path);
        Ok(None)
    }

    /// Whether `prepare` attached something (an observer or fake-quant): a layer without is
    /// left in float. The default, for custom post-processes, is `true`.
    fn onnx_prepared(&self) -> bool {
        true
    }
}

/// The standard post-processes, switched by `prepare` / `prepare_qat` / `convert`.
// One per layer, built once and never moved in a hot path: boxing the fake-quant (the larger
// variant, with its saved switches) would only add an indirection to every forward.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ActivationPostProcess {
    /// Float mode: the output passes unchanged.
    Identity(Identity),
    /// After `prepare` (PTQ): the output's range is recorded.
    Observer(Observer),
    /// After `prepare_qat`: the output is fake-quantized (and observed).
    FakeQuantize(FakeQuantize),
}

impl Default for ActivationPostProcess {
    fn default() -> Self {
        Self::Identity(Identity::new())
    }
}

impl ActivationPostProcess {
    /// What `prepare` (an observer) or `prepare_qat` (a fake-quant) attaches to an output with
    /// `qconfig`'s activation quantizer.
    pub fn prepared(
        qconfig: &QConfig,
        mode: PrepareMode,
        device: &burn::tensor::Device,
    ) -> Result<Self> {
        Ok(match mode {
            PrepareMode::Ptq => Self::Observer(qconfig.activation.observer().init(1, device)?),
            PrepareMode::Qat => {
                Self::FakeQuantize(qconfig.activation.fake_quantize().init(1, device)?)
            }
        })
    }

    /// An error unless nothing is attached yet (preparing twice).
    pub fn ensure_unprepared(&self) -> Result<()> {
        match self {
            Self::Identity(_) => Ok(()),
            _ => Err(Error::stage(StageProblem::AlreadyPrepared)),
        }
    }

    /// The calibrated observer, or a stage error naming `what` had none or saw no data.
    pub fn calibrated_observer(&self, what: &str) -> Result<&Observer> {
        let observer = self.observer().ok_or_else(|| {
            Error::stage(StageProblem::NotPrepared {
                what: format!("the {what} has no observer"),
            })
        })?;
        if observer.min_max().0.iter().any(|v| v.is_infinite()) {
            return Err(Error::stage(StageProblem::NotCalibrated {
                what: format!("the {what}'s observer saw no data"),
            }));
        }
        Ok(observer)
    }

    /// The observer or fake-quant, if any (what `convert` reads the output qparams from).
    pub fn fake_quantize(&self) -> Option<&FakeQuantize> {
        match self {
            Self::FakeQuantize(fq) => Some(fq),
            _ => None,
        }
    }

    /// The observer recording this output's range (the fake-quant's own one in QAT).
    pub fn observer(&self) -> Option<&Observer> {
        match self {
            Self::Identity(_) => None,
            Self::Observer(obs) => Some(obs),
            Self::FakeQuantize(fq) => Some(&fq.activation_post_process),
        }
    }

    /// `post_process(activation.forward(x))`: a layer's activation, then this post-process. A
    /// ReLU followed by a per-tensor min/max fake-quant on the CPU runs as one pass each way,
    /// with the same values and gradients.
    pub fn post_process_activation<const D: usize>(
        &self,
        activation: Activation,
        x: Tensor<D>,
    ) -> Tensor<D> {
        match (activation, self) {
            (Activation::Relu, Self::FakeQuantize(fq)) => fq.forward_after_relu(x),
            _ => self.post_process(activation.forward(x)),
        }
    }

    /// Mutable access to the fake-quant (to enable/disable observer or fake-quant).
    pub fn fake_quantize_mut(&mut self) -> Option<&mut FakeQuantize> {
        match self {
            Self::FakeQuantize(fq) => Some(fq),
            _ => None,
        }
    }
}

impl PostProcess for ActivationPostProcess {
    fn post_process<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Identity(_) => x,
            Self::Observer(obs) => obs.forward(x),
            Self::FakeQuantize(fq) => fq.forward(x),
        }
    }

    fn onnx_prepared(&self) -> bool {
        self.observer().is_some()
    }

    /// The fake-quant's Q/DQ in the QDQ form; nothing in the float one. The int8 form reads
    /// the converted layer's qparams instead, and a PTQ observer has no graph form.
    fn onnx_output(&self, graph: &mut Builder, path: &str) -> Result<Option<ActQ>> {
        match (self, graph.kind) {
            (_, ExportKind::Float | ExportKind::Int8) | (Self::Identity(_), _) => Ok(None),
            (Self::Observer(_), ExportKind::FakeQuant) => Err(Error::Quant(format!(
                "ONNX QDQ export: `{path}` has an observer, not a fake-quant (a PTQ-prepared \
                 model: convert it and export the int8 form)"
            ))),
            (Self::FakeQuantize(fq), ExportKind::FakeQuant) => {
                graph.fake_quant_output(path, fq).map(Some)
            }
        }
    }
}

/// The one per-tensor scale and zero-point of an output observer's qparams.
pub(crate) fn single_qparams(qp: QParams) -> Result<QParamsPt> {
    match (qp.scale.as_slice(), qp.zero_point.as_slice()) {
        ([s], [z]) => QParamsPt::new(*s, *z as i32),
        _ => Err(Error::stage(StageProblem::Unsupported(
            "outputs need per-tensor qparams".into(),
        ))),
    }
}
