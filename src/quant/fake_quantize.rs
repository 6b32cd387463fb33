//! `FakeQuantize`: an observer plus the fake-quant function, as PyTorch's
//! `torch.ao.quantization.FakeQuantize` and `FusedMovingAvgObsFakeQuantize` (torch 2.5.1,
//! `torch/ao/quantization/fake_quantize.py`).
//!
//! Forward, when the observer is enabled: record statistics of `x`, recompute scale and
//! zero-point; when fake-quant is enabled: return
//! `(clamp(nearbyint(x * (1/scale)) + zp, qmin, qmax) - zp) * scale` with a straight-through
//! gradient (see [`functional`](super::functional)).
//!
//! The two PyTorch classes differ in the qparams formula used in the forward pass
//! ([`QParamsCalculator`]):
//! - `FakeQuantize` ([`QParamsCalculator::Observer`]) recomputes them with the Python observer
//!   formula whenever the observer is enabled;
//! - `FusedMovingAvgObsFakeQuantize` ([`QParamsCalculator::Fbgemm`]) runs
//!   `torch.fused_moving_avg_obs_fake_quant`: moving-average min/max, then fbgemm's
//!   `ChooseQuantizationParams` — and only while fake-quant is enabled.
//!
//! In both cases [`FakeQuantize::calculate_qparams`] returns the observer's (Python) formula, which
//! is what PyTorch's `convert` uses.
//!
//! On devices without the CPU kernels (wgpu, CUDA) [`FakeQuantize::forward`] keeps the
//! observer's state, scale and zero-point as device tensors and reads nothing back to the host
//! (see `fake_quantize_device.rs`; LSQ: `learnable/device.rs`); [`FakeQuantize::try_forward`]
//! still reads.
//!
//! With [`FakeQuantizeConfig::learnable`] set, the module is PyTorch's LSQ
//! `_LearnableFakeQuantize` instead: trainable scale and zero-point (see [`super::learnable`]).

use burn::config::Config;
use burn::module::{Module, RunningState};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::functional::{fake_quantize_per_channel, fake_quantize_per_tensor_spec};
use super::learnable::{LearnableQParams, LearnableQParamsConfig};
use super::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverStats, non_finite_batch, read_state,
    write_state,
};
use super::qparams::{QParams, QParamsCalculator, fbgemm_qparams};
use crate::ops::{FakeQuantSpec, has_cpu_kernels, scaled_fake_quantize, scaled_min_max_rows};
use crate::state::switch::{self, Switch};
use crate::{Error, Result};

/// Configuration of a [`FakeQuantize`] module (PyTorch's `FakeQuantize.with_args(...)`).
#[derive(Config, Debug)]
pub struct FakeQuantizeConfig {
    /// The observer (`observer=...` and its keyword arguments).
    pub observer: ObserverConfig,
    /// The forward-pass qparams formula: [`QParamsCalculator::Observer`] for `FakeQuantize`,
    /// [`QParamsCalculator::Fbgemm`] for `FusedMovingAvgObsFakeQuantize`.
    #[config(default = "QParamsCalculator::Observer")]
    pub calculator: QParamsCalculator,
    /// LSQ (`_LearnableFakeQuantize`): trainable scale and zero-point; `None` (the default) for
    /// the plain fake-quant. Needs the [`QParamsCalculator::Observer`] formula.
    #[config(default = "None")]
    pub learnable: Option<LearnableQParamsConfig>,
}

impl FakeQuantizeConfig {
    /// Validates the configuration.
    pub fn validate(&self) -> Result<()> {
        self.observer.validate()?;
        if self.calculator == QParamsCalculator::Fbgemm {
            if self.observer.kind != ObserverKind::MovingAverageMinMax {
                return Err(Error::Config(
                    "FusedMovingAvgObsFakeQuantize only works with moving-average min/max observers"
                        .into(),
                ));
            }
            if self.observer.qscheme.is_per_channel() && self.observer.ch_axis != 0 {
                return Err(Error::Config(
                    "per-channel fused fake-quant is only supported on axis 0".into(),
                ));
            }
        }
        if let Some(l) = &self.learnable {
            l.validate(self.calculator, self.observer.dtype)?;
        }
        Ok(())
    }

    /// Creates the module on `device`. `channels` is the size of the channel axis for
    /// per-channel schemes (e.g. a conv weight's output channels); pass 1 for per-tensor ones.
    pub fn init(&self, channels: usize, device: &Device) -> Result<FakeQuantize> {
        self.validate()?;
        let observer = self.observer.init(channels, device)?;
        let n = if self.observer.qscheme.is_per_channel() {
            channels
        } else {
            1
        };
        let state = |v: f32| {
            RunningState::new(Tensor::<1>::from_data(
                TensorData::new(vec![v; n], [n]),
                device,
            ))
        };
        // An LSQ fake-quant's states start at its initial parameters: they are what the
        // parameters hold until a static estimate replaces them.
        let (scale, zero_point) = self
            .learnable
            .as_ref()
            .map_or((1.0, 0.0), |l| (l.scale as f32, l.zero_point as f32));
        Ok(FakeQuantize {
            activation_post_process: observer,
            scale: state(scale),
            zero_point: state(zero_point),
            observer_enabled: switch::switch(true, device),
            fake_quant_enabled: switch::switch(true, device),
            calculator: self.calculator,
            learnable: self.learnable.as_ref().map(|l| l.init(n, device)),
        })
    }
}

/// Observer + fake-quant module; see the [module docs](self).
///
/// # Saved state
/// The record holds what PyTorch's state dict holds, under PyTorch's names: `scale`,
/// `zero_point` (exact integers in f32), the two switches `observer_enabled` and
/// `fake_quant_enabled` (both on after construction; [`Switch`]es: a clone's are its own), and
/// the observer's `min_val`, `max_val` (and `histogram`). A model saved during QAT and loaded
/// continues exactly where it stopped — observers off stay off, and the next training step is
/// the one the saved model would have taken.
///
/// The configuration is not in the record ([`Self::calculator`], the observer's kind and integer
/// range): as in PyTorch, a model is loaded into one built the same way (the same
/// `prepare_qat` qconfig), which supplies it. Runtime-only: the observer's count of skipped
/// non-finite batches ([`Observer::skipped_batches`], diagnostics only).
#[derive(Module, Debug)]
pub struct FakeQuantize {
    /// The observer (PyTorch's attribute name).
    pub activation_post_process: Observer,
    /// Current scales (one per tensor or per channel).
    pub scale: RunningState<Tensor<1>>,
    /// Current zero-points (integers stored as f32).
    pub zero_point: RunningState<Tensor<1>>,
    /// Whether the observer records statistics (PyTorch's uint8 buffer of that name).
    observer_enabled: Switch,
    /// Whether the forward pass fake-quantizes (PyTorch's uint8 buffer of that name).
    fake_quant_enabled: Switch,
    #[module(skip)]
    calculator: QParamsCalculator,
    /// LSQ's trainable scale and zero-point (`None`: the plain fake-quant).
    pub learnable: Option<LearnableQParams>,
}

impl FakeQuantize {
    /// Turns statistics collection on (`enable_observer`).
    pub fn enable_observer(&mut self) {
        switch::set(&mut self.observer_enabled, true);
    }

    /// Turns statistics collection off (`disable_observer`): the qparams are frozen (LSQ:
    /// `toggle_observer_update(False)`, the parameters take the last static estimate).
    pub fn disable_observer(&mut self) {
        self.sync_learnable();
        switch::set(&mut self.observer_enabled, false);
    }

    /// Turns fake quantization on (`enable_fake_quant`).
    pub fn enable_fake_quant(&mut self) {
        switch::set(&mut self.fake_quant_enabled, true);
    }

    /// Turns fake quantization off (`disable_fake_quant`): the forward pass is the identity.
    pub fn disable_fake_quant(&mut self) {
        switch::set(&mut self.fake_quant_enabled, false);
    }

    /// Whether the observer is enabled.
    pub fn observer_enabled(&self) -> bool {
        switch::is_on(&self.observer_enabled)
    }

    /// Whether fake quantization is enabled.
    pub fn fake_quant_enabled(&self) -> bool {
        switch::is_on(&self.fake_quant_enabled)
    }

    /// The forward-pass qparams formula.
    pub fn calculator(&self) -> QParamsCalculator {
        self.calculator
    }

    /// Effective `quant_min`.
    pub fn quant_min(&self) -> i64 {
        self.activation_post_process.quant_min()
    }

    /// Effective `quant_max`.
    pub fn quant_max(&self) -> i64 {
        self.activation_post_process.quant_max()
    }

    /// The scale and zero-point currently held in the buffers (what the forward pass uses; for
    /// LSQ, the static estimate or the learned values, see [`super::learnable`]).
    pub fn current_qparams(&self) -> QParams {
        if let Some(l) = &self.learnable {
            return self.learnable_qparams(l);
        }
        QParams {
            scale: read_state(&self.scale),
            zero_point: read_state(&self.zero_point)
                .into_iter()
                .map(|z| z as i64)
                .collect(),
        }
    }

    /// The observer's qparams (Python formula), as PyTorch's `calculate_qparams` — the values
    /// `convert` uses; for LSQ, its own `calculate_qparams` (the learned values).
    pub fn calculate_qparams(&self) -> Result<QParams> {
        if let Some(l) = &self.learnable {
            return Ok(self.learnable_qparams(l));
        }
        self.activation_post_process.calculate_qparams()
    }

    /// Recomputes scale and zero-point from the observer's recorded range, as the next
    /// observing forward would; used after the replicas' statistics are committed
    /// ([`crate::finetune::data_parallel`]). Does nothing while the observer is off, before any
    /// range was recorded, or (fused fake-quant) while fake quantization is off.
    pub(crate) fn refresh_qparams(&mut self) {
        if self.refresh_qparams_on_device() || !self.observer_enabled() {
            return;
        }
        let obs = &self.activation_post_process;
        let stats = obs.stats();
        if stats.min.iter().chain(&stats.max).any(|v| v.is_infinite()) {
            return;
        }
        if self.calculator == QParamsCalculator::Fbgemm && !self.fake_quant_enabled() {
            return;
        }
        if let Ok(qp) = self.qparams_from(&stats) {
            self.store(&qp);
        }
    }

    /// Scale and zero-point for `stats` with this fake-quant's forward formula ([`Self::calculator`]).
    fn qparams_from(&self, stats: &ObserverStats) -> Result<QParams> {
        let obs = &self.activation_post_process;
        match self.calculator {
            QParamsCalculator::Observer => obs.qparams_of(stats),
            QParamsCalculator::Fbgemm => Ok(fbgemm_qparams(
                &stats.min,
                &stats.max,
                obs.quant_min(),
                obs.quant_max(),
                obs.qscheme().is_symmetric(),
            )),
        }
    }

    pub(super) fn store(&self, qp: &QParams) {
        write_state(&self.scale, qp.scale.clone());
        write_state(
            &self.zero_point,
            qp.zero_point.iter().map(|&z| z as f32).collect(),
        );
    }

    /// Observes (if enabled) and fake-quantizes (if enabled) `x`: what models call.
    ///
    /// A batch with NaN or ±inf values is not observed (the observer skips and counts it, see
    /// [`Observer::forward`]) and is fake-quantized with the current qparams; before any range
    /// was observed, a fused fake-quant passes such a batch through unchanged.
    ///
    /// # Panics
    /// If `x` does not have the channel count a per-channel fake-quant was built for (a
    /// model-construction bug, like a shape mismatch in any tensor operation).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.run_lenient(Input::Plain(x))
    }

    /// [`FakeQuantize::forward`] that returns an error instead: non-finite input while the
    /// observer is enabled, no observed range for a fused fake-quant, or a channel mismatch.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        self.run_on(Input::Plain(x), true)
    }

    /// [`Self::observe`] of `x` itself.
    pub(super) fn observe_plain<const D: usize>(
        &self,
        x: &Tensor<D>,
        strict: bool,
    ) -> Result<Option<ObserverStats>> {
        self.observe(&Input::Plain(x.clone()), strict)
    }

    /// Observes the input; the statistics written, or `None` when nothing was (skipped or
    /// empty).
    fn observe<const D: usize>(
        &self,
        input: &Input<D>,
        strict: bool,
    ) -> Result<Option<ObserverStats>> {
        let obs = &self.activation_post_process;
        let (x, after_relu) = match input {
            Input::Plain(x) => (x, false),
            Input::AfterRelu(x) => (x, true),
            Input::ScaledRows(w, s) => {
                let (mut bmin, mut bmax, finite) = scaled_min_max_rows(w, s);
                if !obs.qscheme().is_per_channel() {
                    bmin = vec![bmin.into_iter().fold(f32::INFINITY, f32::min)];
                    bmax = vec![bmax.into_iter().fold(f32::NEG_INFINITY, f32::max)];
                }
                let observed = if finite {
                    obs.record_range(bmin, bmax)
                } else {
                    Err(non_finite_batch())
                };
                return if strict {
                    observed
                } else {
                    Ok(obs.lenient(observed))
                };
            }
        };
        if after_relu {
            match obs.observe_stats_after_relu(x) {
                // A non-finite value: observe relu(x) itself, as the unfused layers would.
                Err(Error::Quant(_)) => {
                    return self.observe(&Input::Plain(relu(x.clone())), strict);
                }
                observed => return observed,
            }
        }
        if strict {
            obs.observe_stats(x)
        } else {
            Ok(obs.observe_lenient(x))
        }
    }

    /// Whether [`Self::forward_after_relu`] takes `x` in one pass: fake quantization on, one
    /// scale for the tensor, a min/max observer, and the CPU backend.
    pub(crate) fn fuses_relu<const D: usize>(&self, x: &Tensor<D>) -> bool {
        !self.activation_post_process.qscheme().is_per_channel() && self.fuses_on(x)
    }

    /// Fake quantization on, a min/max observer, and an `f32` tensor on the CPU backend.
    fn fuses_on<const D: usize>(&self, x: &Tensor<D>) -> bool {
        self.fake_quant_enabled()
            && self.learnable.is_none()
            && self.activation_post_process.config().kind != ObserverKind::Histogram
            && has_cpu_kernels(&x.device())
            && x.dtype() == DType::F32
    }

    /// `self.forward(relu(x))` (PyTorch's fused ConvReLU / ConvBnReLU followed by its
    /// `activation_post_process`); in one pass each way where [`Self::fuses_relu`] holds.
    pub(crate) fn forward_after_relu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if !self.fuses_relu(&x) {
            return self.forward(relu(x));
        }
        self.run_lenient(Input::AfterRelu(x))
    }

    /// Whether [`Self::forward_scaled_rows`] takes `w · s` in one op: per tensor or per channel
    /// along axis 0, fake quantization on, a min/max observer, and the CPU backend.
    pub fn fuses_scaled_rows<const D: usize>(&self, w: &Tensor<D>) -> bool {
        let obs = &self.activation_post_process;
        (!obs.qscheme().is_per_channel() || obs.ch_axis() == 0) && self.fuses_on(w)
    }

    /// `self.forward(w · s)` with `s` one factor per row of axis 0 (QAT ConvBn's weight scaled by
    /// `γ / σ`): observed from the rows' ranges and fake-quantized in one op each way where
    /// [`Self::fuses_scaled_rows`] holds, without `w · s` as a tensor.
    ///
    /// # Panics
    /// If `s` does not have one value per row of `w`, or `w` not the channel count the
    /// fake-quant was built for (model-construction bugs).
    pub fn forward_scaled_rows<const D: usize>(&self, w: Tensor<D>, s: Tensor<1>) -> Tensor<D> {
        assert_eq!(
            s.dims()[0],
            w.dims()[0],
            "one scale factor per row of the weight"
        );
        if !self.fuses_scaled_rows(&w) {
            return self.forward(scale_rows(w, s));
        }
        self.run_lenient(Input::ScaledRows(w, s))
    }

    /// [`Self::run_on`], panicking on the errors a lenient run still returns (shapes).
    fn run_lenient<const D: usize>(&self, input: Input<D>) -> Tensor<D> {
        let input = match input {
            Input::Plain(x) if self.runs_on_device(&x) && x.shape().num_elements() > 0 => {
                return self.forward_on_device(x);
            }
            input => input,
        };
        match self.run_on(input, false) {
            Ok(y) => y,
            Err(e) => panic!("{e}"),
        }
    }

    /// Observes (if enabled) and fake-quantizes (if enabled) the input.
    fn run_on<const D: usize>(&self, input: Input<D>, strict: bool) -> Result<Tensor<D>> {
        let obs = &self.activation_post_process;
        let per_channel = obs.qscheme().is_per_channel();
        if input.is_empty() {
            return Ok(input.unchanged());
        }
        if let Some(l) = &self.learnable {
            return self.run_learnable(l, input.unchanged(), strict);
        }
        let (observing, quantizing) = (self.observer_enabled(), self.fake_quant_enabled());
        let mut qparams = None;
        match self.calculator {
            QParamsCalculator::Observer => {
                if observing {
                    let stats = match self.observe(&input, strict)? {
                        Some(stats) => stats,
                        None => obs.stats(),
                    };
                    let qp = self.qparams_from(&stats)?;
                    self.store(&qp);
                    qparams = Some(qp);
                }
            }
            QParamsCalculator::Fbgemm => {
                let observed = if observing {
                    self.observe(&input, strict)?
                } else {
                    None
                };
                if quantizing {
                    let stats = observed.unwrap_or_else(|| obs.stats());
                    if stats.min.iter().chain(&stats.max).any(|v| v.is_infinite()) {
                        if !strict {
                            return Ok(input.unchanged());
                        }
                        return Err(Error::Quant(
                            "fused fake-quant has no observed range (observer disabled before \
                             any data)"
                                .into(),
                        ));
                    }
                    let qp = self.qparams_from(&stats)?;
                    self.store(&qp);
                    qparams = Some(qp);
                }
            }
        }
        if !quantizing {
            return Ok(input.unchanged());
        }
        let qp = qparams.unwrap_or_else(|| self.current_qparams());
        let (qmin, qmax) = (obs.quant_min(), obs.quant_max());
        match input {
            Input::ScaledRows(w, s) => {
                let rows = w.dims()[0];
                // The kernel takes qparams per row: a per-tensor pair repeated.
                let (scale, zero_point) = if per_channel {
                    (qp.scale, qp.zero_point)
                } else {
                    (vec![qp.scale[0]; rows], vec![qp.zero_point[0]; rows])
                };
                if scale.len() != rows {
                    return Err(Error::Shape(format!(
                        "per-channel fake-quant has {} channels but the weight has {rows} rows",
                        scale.len()
                    )));
                }
                let spec = FakeQuantSpec {
                    scale,
                    zero_point,
                    inner: w.shape().num_elements() / rows,
                    quant_min: qmin,
                    quant_max: qmax,
                    relu: false,
                };
                Ok(scaled_fake_quantize(w, s, spec))
            }
            // `fuses_relu` holds only per tensor.
            Input::Plain(x) if per_channel => {
                fake_quantize_per_channel(x, &qp.scale, &qp.zero_point, obs.ch_axis(), qmin, qmax)
            }
            Input::Plain(x) => Ok(fake_quantize_per_tensor_spec(
                x,
                FakeQuantSpec::per_tensor(qp.scale[0], qp.zero_point[0], qmin, qmax),
            )),
            Input::AfterRelu(x) => Ok(fake_quantize_per_tensor_spec(
                x,
                FakeQuantSpec::per_tensor(qp.scale[0], qp.zero_point[0], qmin, qmax).after_relu(),
            )),
        }
    }
}

/// What a fake-quant forward pass takes: `x`, or a fused form of `relu(x)` or `w · s`.
// Moved once per call, never stored: boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Input<const D: usize> {
    /// `x` itself.
    Plain(Tensor<D>),
    /// `relu(x)` ([`FakeQuantize::fuses_relu`]).
    AfterRelu(Tensor<D>),
    /// `w · s`, `s` one factor per row of axis 0 ([`FakeQuantize::fuses_scaled_rows`]).
    ScaledRows(Tensor<D>, Tensor<1>),
}

impl<const D: usize> Input<D> {
    fn is_empty(&self) -> bool {
        match self {
            Input::Plain(x) | Input::AfterRelu(x) | Input::ScaledRows(x, _) => {
                x.shape().num_elements() == 0
            }
        }
    }

    /// The input's value without fake quantization.
    fn unchanged(self) -> Tensor<D> {
        match self {
            Input::Plain(x) => x,
            Input::AfterRelu(x) => relu(x),
            Input::ScaledRows(w, s) => scale_rows(w, s),
        }
    }
}

/// `w · s` with `s` one factor per row of axis 0, as Burn ops: on the CPU a `[rows, rest]`
/// matrix times a column, so that the gradient to `s` is one contiguous reduction per row (a
/// `[C, 1, 1, 1]` broadcast reduces three axes one at a time, which dominated the QAT step's
/// fixed cost at small batches); elsewhere the broadcast, because the reshaped gradient of a GPU
/// conv's weight is a view Burn 0.22's wgpu fusion misreads.
fn scale_rows<const D: usize>(w: Tensor<D>, s: Tensor<1>) -> Tensor<D> {
    let dims = w.dims();
    if has_cpu_kernels(&w.device()) {
        let rows = w.reshape([dims[0], dims[1..].iter().product()]);
        return (rows * s.reshape([-1, 1])).reshape(dims);
    }
    let mut shape = [1i64; D];
    shape[0] = -1;
    w * s.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{ObserverKind, QScheme, QuantDtype};

    fn bits(t: Tensor<1>) -> Vec<u32> {
        let v = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// The switches are the module's own: toggling a clone's leaves the original's, the
    /// stage drivers and evaluation working on copies.
    #[test]
    fn switching_a_clone_leaves_the_original() {
        let device = Device::flex().autodiff();
        let config = FakeQuantizeConfig::new(ObserverConfig::new(ObserverKind::MinMax));
        let original = config.init(1, &device).unwrap();
        let mut copy = original.clone();
        copy.disable_observer();
        copy.disable_fake_quant();
        assert!(original.observer_enabled() && original.fake_quant_enabled());
        assert!(!copy.observer_enabled() && !copy.fake_quant_enabled());
        copy.enable_observer();
        assert!(copy.observer_enabled() && !copy.fake_quant_enabled());
    }

    /// A loaded record sets the switches (the host copies follow the loaded tensors); a copy
    /// taken before the load keeps its own.
    #[test]
    fn loading_a_record_sets_the_switches() {
        let device = Device::flex().autodiff();
        let config = FakeQuantizeConfig::new(ObserverConfig::new(ObserverKind::MinMax));
        let mut saved = config.init(1, &device).unwrap();
        saved.disable_observer();
        let target = config.init(1, &device).unwrap();
        let copy = target.clone();
        let loaded = target.load_record(saved.clone().into_record());
        assert!(!loaded.observer_enabled() && loaded.fake_quant_enabled());
        assert!(copy.observer_enabled() && copy.fake_quant_enabled());
        saved.enable_observer();
        saved.disable_fake_quant();
        let reloaded = loaded.load_record(saved.into_record());
        assert!(reloaded.observer_enabled() && !reloaded.fake_quant_enabled());
    }

    /// The one-pass ReLU + fake-quant gives what ReLU and then `forward` give, bit for bit: the
    /// output, the gradient, the observer's range and the qparams, over a schedule of batches
    /// (negative values, zeros, NaN and -inf among them) with the observer and then the fake-quant
    /// switched off, for both qparams formulas.
    #[test]
    fn forward_after_relu_is_relu_then_forward() {
        let device = Device::flex().autodiff();
        let batches: Vec<Vec<f32>> = vec![
            (0..64).map(|i| (i as f32 - 40.0) * 0.37).collect(),
            (0..64)
                .map(|i| ((i * 13) % 17) as f32 * 0.9 - 3.0)
                .collect(),
            vec![-1.0, 0.0, -0.0, 2.5, f32::NEG_INFINITY, 7.0, 0.25, -3.0],
            vec![f32::NAN, 1.0, -2.0, 3.0],
            vec![-5.0, -4.0, -0.5, -0.0],
            (0..64).map(|i| (i as f32 - 10.0) * 0.11).collect(),
        ];
        for calculator in [QParamsCalculator::Observer, QParamsCalculator::Fbgemm] {
            let observer = ObserverConfig::new(ObserverKind::MovingAverageMinMax)
                .with_dtype(QuantDtype::QUInt8)
                .with_qscheme(QScheme::PerTensorAffine)
                .with_quant_range(Some((0, 255)));
            let config = FakeQuantizeConfig::new(observer).with_calculator(calculator);
            let mut fused = config.init(1, &device).unwrap();
            let mut reference = config.init(1, &device).unwrap();
            for (step, values) in batches.iter().enumerate() {
                if step == 4 {
                    fused.disable_observer();
                    reference.disable_observer();
                }
                if step == 5 {
                    fused.disable_fake_quant();
                    reference.disable_fake_quant();
                }
                let n = values.len();
                let x = || {
                    Tensor::<1>::from_data(TensorData::new(values.clone(), [n]), &device)
                        .require_grad()
                };
                let dy = Tensor::<1>::from_data(
                    TensorData::new((0..n).map(|i| i as f32 + 0.5).collect::<Vec<_>>(), [n]),
                    &device,
                );
                let what = format!("{calculator:?}, batch {step}");
                let (xa, xb) = (x(), x());
                assert_eq!(fused.fuses_relu(&xa), step < 5, "{what}");
                let ya = fused.forward_after_relu(xa.clone());
                let yb = reference.forward(relu(xb.clone()));
                assert_eq!(bits(ya.clone()), bits(yb.clone()), "output, {what}");
                let ga = (ya * dy.clone()).sum().backward();
                let gb = (yb * dy).sum().backward();
                let grad = |x: &Tensor<1>, g| bits(x.grad(g).unwrap());
                assert_eq!(grad(&xa, &ga), grad(&xb, &gb), "gradient, {what}");
                assert_eq!(
                    fused.activation_post_process.min_max(),
                    reference.activation_post_process.min_max(),
                    "observed range, {what}"
                );
                assert_eq!(
                    fused.current_qparams(),
                    reference.current_qparams(),
                    "qparams, {what}"
                );
            }
        }
    }
}
