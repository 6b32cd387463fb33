//! `QConfig`: which observer / fake-quant to attach to activations and weights, with PyTorch's
//! presets (`torch/ao/quantization/qconfig.py`, `fake_quantize.py`, `observer.py`, torch 2.5.1).
//!
//! | preset | activation | weight |
//! |---|---|---|
//! | `get_default_qat_qconfig("x86"/"fbgemm")` (version 1) | `FusedMovingAvgObsFakeQuantize`, `MovingAverageMinMaxObserver`, quint8 `[0,255]`, `reduce_range=True` → `[0,127]`, per-tensor affine | `default_fused_per_channel_wt_fake_quant`: fused, `MovingAveragePerChannelMinMaxObserver` (c = 0.01), qint8 `[-128,127]`, per-channel symmetric, axis 0 |
//! | `get_default_qat_qconfig("qnnpack")` (version 1) | same, `reduce_range=False` → `[0,255]` | `default_fused_wt_fake_quant`: fused, `MovingAverageMinMaxObserver` (c = 0.01), qint8 `[-128,127]`, per-tensor symmetric |
//! | `get_default_qat_qconfig(.., version=0)` | `FakeQuantize` (non-fused), same observers | `default_per_channel_weight_fake_quant` / `default_weight_fake_quant` |
//! | `get_default_qconfig("x86"/"fbgemm")` | `HistogramObserver(reduce_range=True)` (quint8 `[0,127]`) | `default_per_channel_weight_observer`: `PerChannelMinMaxObserver`, qint8, per-channel symmetric |
//! | `get_default_qconfig("qnnpack")` | `HistogramObserver(reduce_range=False)` | `default_weight_observer`: `MinMaxObserver`, qint8, per-tensor symmetric |
//! | torchvision's `quantize_model(.., "fbgemm"/"qnnpack")` ([`QConfig::torchvision`]) | `default_observer`: `MinMaxObserver`, quint8 `[0,127]` | per-channel (fbgemm) / per-tensor (qnnpack) symmetric `MinMaxObserver`s |
//!
//! `onednn` is as `x86` without `reduce_range` on activations. Custom qconfigs are built from
//! [`ObserverConfig`] and [`FakeQuantizeConfig`] directly.
//!
//! Beyond PyTorch's presets: [`QConfig::with_weight_bits`] narrows any preset's weights to
//! `b`-bit values held in qint8, and [`QConfig::lsq_qat`] is QAT with LSQ
//! (`_LearnableFakeQuantize`) on weights and activations.

use burn::config::Config;

use super::fake_quantize::FakeQuantizeConfig;
use super::learnable_fake_quantize::LearnableFakeQuantizeConfig;
use super::observer::{ObserverConfig, ObserverKind};
use super::qparams::QParamsCalculator;
use super::scheme::{QScheme, QuantDtype};
use crate::{Error, Result};

/// What a qconfig attaches to a tensor: a plain observer (post-training quantization) or a
/// fake-quant module (quantization-aware training).
#[derive(Config, Debug)]
pub enum Quantizer {
    /// Observer only (PTQ calibration).
    Observer(ObserverConfig),
    /// Observer + fake quantization (QAT).
    FakeQuantize(FakeQuantizeConfig),
    /// LSQ: fake quantization with trainable scale and zero-point (QAT,
    /// `_LearnableFakeQuantize`), attached as a [`FakeQuantize`](super::FakeQuantize) with a
    /// learnable part ([`LearnableFakeQuantizeConfig::fake_quantize`]).
    Learnable(LearnableFakeQuantizeConfig),
}

impl Quantizer {
    /// The observer configuration.
    pub fn observer(&self) -> &ObserverConfig {
        match self {
            Quantizer::Observer(o) => o,
            Quantizer::FakeQuantize(f) => &f.observer,
            Quantizer::Learnable(l) => &l.observer,
        }
    }

    /// Whether this quantizer fake-quantizes (QAT) rather than only observing.
    pub fn is_fake_quantize(&self) -> bool {
        matches!(self, Quantizer::FakeQuantize(_) | Quantizer::Learnable(_))
    }

    /// The fake-quant configuration; a plain observer is wrapped in a non-fused `FakeQuantize`.
    pub fn fake_quantize(&self) -> FakeQuantizeConfig {
        match self {
            Quantizer::FakeQuantize(f) => f.clone(),
            Quantizer::Observer(o) => FakeQuantizeConfig::new(o.clone()),
            Quantizer::Learnable(l) => l.fake_quantize(),
        }
    }

    /// The same quantizer with the integer range `[quant_min, quant_max]` (the observer's custom
    /// range, and LSQ's own).
    pub fn with_quant_range(self, quant_min: i64, quant_max: i64) -> Self {
        let range = Some((quant_min, quant_max));
        match self {
            Quantizer::Observer(o) => Quantizer::Observer(o.with_quant_range(range)),
            Quantizer::FakeQuantize(f) => Quantizer::FakeQuantize(FakeQuantizeConfig {
                observer: f.observer.clone().with_quant_range(range),
                ..f
            }),
            Quantizer::Learnable(l) => Quantizer::Learnable(LearnableFakeQuantizeConfig {
                observer: l.observer.clone().with_quant_range(range),
                quant_min,
                quant_max,
                ..l
            }),
        }
    }
}

/// A backend name accepted by PyTorch's `get_default_qconfig` / `get_default_qat_qconfig`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum QuantBackend {
    /// `"x86"` (PyTorch's default).
    X86,
    /// `"fbgemm"`.
    Fbgemm,
    /// `"qnnpack"`.
    Qnnpack,
    /// `"onednn"`.
    Onednn,
}

impl std::str::FromStr for QuantBackend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "x86" => Ok(QuantBackend::X86),
            "fbgemm" => Ok(QuantBackend::Fbgemm),
            "qnnpack" => Ok(QuantBackend::Qnnpack),
            "onednn" => Ok(QuantBackend::Onednn),
            other => Err(Error::Config(format!(
                "backend '{other}' not supported; use one of x86, fbgemm, qnnpack, onednn"
            ))),
        }
    }
}

/// Activation and weight quantizers (PyTorch's `QConfig(activation=..., weight=...)`).
#[derive(Config, Debug)]
pub struct QConfig {
    /// Quantizer for activations.
    pub activation: Quantizer,
    /// Quantizer for weights.
    pub weight: Quantizer,
}

/// Activation fake-quant of the default QAT qconfigs: quint8 `[0, 255]`, moving-average min/max.
fn qat_activation(reduce_range: bool, fused: bool) -> Quantizer {
    let observer = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
        .with_dtype(QuantDtype::QUInt8)
        .with_qscheme(QScheme::PerTensorAffine)
        .with_quant_range(Some((0, 255)))
        .with_reduce_range(reduce_range);
    Quantizer::FakeQuantize(FakeQuantizeConfig::new(observer).with_calculator(calc(fused)))
}

fn calc(fused: bool) -> QParamsCalculator {
    if fused {
        QParamsCalculator::Fbgemm
    } else {
        QParamsCalculator::Observer
    }
}

/// `default_fused_per_channel_wt_fake_quant` / `default_per_channel_weight_fake_quant`.
fn per_channel_weight_fake_quant(fused: bool) -> Quantizer {
    let observer = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
        .with_dtype(QuantDtype::QInt8)
        .with_qscheme(QScheme::PerChannelSymmetric)
        .with_quant_range(Some((-128, 127)))
        .with_ch_axis(0);
    Quantizer::FakeQuantize(FakeQuantizeConfig::new(observer).with_calculator(calc(fused)))
}

/// `default_fused_wt_fake_quant` / `default_weight_fake_quant`.
fn per_tensor_weight_fake_quant(fused: bool) -> Quantizer {
    let observer = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
        .with_dtype(QuantDtype::QInt8)
        .with_qscheme(QScheme::PerTensorSymmetric)
        .with_quant_range(Some((-128, 127)));
    Quantizer::FakeQuantize(FakeQuantizeConfig::new(observer).with_calculator(calc(fused)))
}

impl QConfig {
    /// `get_default_qat_qconfig(backend)` (version 1: fused observer + fake-quant modules).
    pub fn default_qat(backend: QuantBackend) -> Self {
        Self::default_qat_versioned(backend, true)
    }

    /// `get_default_qat_qconfig(backend, version=0)` (non-fused `FakeQuantize`).
    pub fn default_qat_v0(backend: QuantBackend) -> Self {
        Self::default_qat_versioned(backend, false)
    }

    fn default_qat_versioned(backend: QuantBackend, fused: bool) -> Self {
        match backend {
            QuantBackend::X86 | QuantBackend::Fbgemm => QConfig::new(
                qat_activation(true, fused),
                per_channel_weight_fake_quant(fused),
            ),
            QuantBackend::Qnnpack => QConfig::new(
                qat_activation(false, fused),
                per_tensor_weight_fake_quant(fused),
            ),
            QuantBackend::Onednn => QConfig::new(
                qat_activation(false, fused),
                per_channel_weight_fake_quant(fused),
            ),
        }
    }

    /// `get_default_qconfig(backend)` (post-training quantization: histogram activations,
    /// min/max weights).
    pub fn default_ptq(backend: QuantBackend) -> Self {
        let histogram = |reduce_range: bool| {
            Quantizer::Observer(
                ObserverConfig::new(ObserverKind::Histogram)
                    .with_dtype(QuantDtype::QUInt8)
                    .with_qscheme(QScheme::PerTensorAffine)
                    .with_reduce_range(reduce_range),
            )
        };
        let per_channel_weight = Quantizer::Observer(
            ObserverConfig::new(ObserverKind::MinMax)
                .with_dtype(QuantDtype::QInt8)
                .with_qscheme(QScheme::PerChannelSymmetric),
        );
        let per_tensor_weight = Quantizer::Observer(
            ObserverConfig::new(ObserverKind::MinMax)
                .with_dtype(QuantDtype::QInt8)
                .with_qscheme(QScheme::PerTensorSymmetric),
        );
        match backend {
            QuantBackend::X86 | QuantBackend::Fbgemm => {
                QConfig::new(histogram(true), per_channel_weight)
            }
            QuantBackend::Qnnpack => QConfig::new(histogram(false), per_tensor_weight),
            QuantBackend::Onednn => QConfig::new(histogram(false), per_channel_weight),
        }
    }

    /// The qconfig of torchvision's `quantize_model(model, backend)` (its builders' `quantize =
    /// True` without weights), set "to match that of the serialized models": activations
    /// `default_observer` (`MinMaxObserver`, quint8 `[0, 127]`, per-tensor affine); weights
    /// `default_per_channel_weight_observer` for `fbgemm` and `default_weight_observer`
    /// (per-tensor symmetric) for `qnnpack`. torchvision sets none for other backends, which
    /// then stay unquantized; that is an error here.
    pub fn torchvision(backend: QuantBackend) -> Result<Self> {
        let activation = ObserverConfig::new(ObserverKind::MinMax)
            .with_dtype(QuantDtype::QUInt8)
            .with_qscheme(QScheme::PerTensorAffine)
            .with_quant_range(Some((0, 127)));
        let weight = |qscheme| {
            ObserverConfig::new(ObserverKind::MinMax)
                .with_dtype(QuantDtype::QInt8)
                .with_qscheme(qscheme)
        };
        let weight = match backend {
            QuantBackend::Fbgemm => weight(QScheme::PerChannelSymmetric),
            QuantBackend::Qnnpack => weight(QScheme::PerTensorSymmetric),
            other => {
                return Err(Error::Config(format!(
                    "torchvision's quantize_model sets a qconfig for the fbgemm and qnnpack \
                     backends only, not {other:?}"
                )));
            }
        };
        Ok(QConfig::new(
            Quantizer::Observer(activation),
            Quantizer::Observer(weight),
        ))
    }

    /// `bits`-bit signed weights held in qint8: the weight quantizer's range becomes
    /// `[-2^(bits-1), 2^(bits-1) - 1]` (`[-8, 7]` for 4 bits), as PyTorch's
    /// `quant_min`/`quant_max` arguments do; `convert` clamps the int8 weights to it
    /// (`_clamp_weights`). `bits` is 2 to 8.
    pub fn with_weight_bits(mut self, bits: u32) -> Result<Self> {
        let (quant_min, quant_max) = signed_range(bits)?;
        self.weight = self.weight.with_quant_range(quant_min, quant_max);
        Ok(self)
    }

    /// QAT with LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020): PyTorch's
    /// `_LearnableFakeQuantize` on weights and activations, scale and zero-point trained with the
    /// model once [`crate::quantize::enable_param_learning`] is called (until then they are the
    /// observers' static estimates, as after `enable_static_estimate`).
    ///
    /// - activations: quint8 per-tensor affine, moving-average min/max, `[0, 127]` for x86 /
    ///   fbgemm (their `reduce_range`) and `[0, 255]` for qnnpack / onednn;
    /// - weights: qint8 symmetric in `[-2^(b-1), 2^(b-1) - 1]` (`weight_bits` = b, 2 to 8),
    ///   moving-average min/max, per channel (axis 0) except for qnnpack (per tensor);
    /// - `use_grad_scaling` on: the paper scales the step-size gradient by
    ///   `1/√(N·Q_P)` and reports that training is unstable without it at low bit widths
    ///   (PyTorch's default is off; here `N` is the tensor's element count, as PyTorch does).
    pub fn lsq_qat(backend: QuantBackend, weight_bits: u32) -> Result<Self> {
        let (wmin, wmax) = signed_range(weight_bits)?;
        let act_max = match backend {
            QuantBackend::X86 | QuantBackend::Fbgemm => 127,
            QuantBackend::Qnnpack | QuantBackend::Onednn => 255,
        };
        let lsq = |observer: ObserverConfig, quant_min: i64, quant_max: i64| {
            Quantizer::Learnable(
                LearnableFakeQuantizeConfig::new(
                    observer.with_quant_range(Some((quant_min, quant_max))),
                )
                .with_quant_min(quant_min)
                .with_quant_max(quant_max)
                .with_use_grad_scaling(true),
            )
        };
        let activation = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
            .with_dtype(QuantDtype::QUInt8)
            .with_qscheme(QScheme::PerTensorAffine);
        let weight_scheme = match backend {
            QuantBackend::Qnnpack => QScheme::PerTensorSymmetric,
            _ => QScheme::PerChannelSymmetric,
        };
        let weight = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
            .with_dtype(QuantDtype::QInt8)
            .with_qscheme(weight_scheme)
            .with_ch_axis(0);
        Ok(QConfig::new(
            lsq(activation, 0, act_max),
            lsq(weight, wmin, wmax),
        ))
    }
}

/// `[-2^(bits-1), 2^(bits-1) - 1]`, for 2 to 8 bits.
fn signed_range(bits: u32) -> Result<(i64, i64)> {
    if !(2..=8).contains(&bits) {
        return Err(Error::Config(format!(
            "weight bits must be 2 to 8 (values held in qint8), got {bits}"
        )));
    }
    let half = 1i64 << (bits - 1);
    Ok((-half, half - 1))
}
