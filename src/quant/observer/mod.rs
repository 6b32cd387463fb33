//! Observers: modules that record statistics of the tensors they see and turn them into
//! quantization parameters (`torch.ao.quantization.observer`, torch 2.5.1).
//!
//! One [`Observer`] module covers PyTorch's
//! - `MinMaxObserver` / `PerChannelMinMaxObserver` ([`ObserverKind::MinMax`]): running min/max;
//! - `MovingAverageMinMaxObserver` / `MovingAveragePerChannelMinMaxObserver`
//!   ([`ObserverKind::MovingAverageMinMax`]): `min ← min + c·(min(X) − min)`, the first batch
//!   sets the range;
//! - `HistogramObserver` ([`ObserverKind::Histogram`]): a 2048-bin running histogram and the L2
//!   norm-minimising range search (see [`histogram`]).
//!
//! Per-tensor or per-channel follows from the [`QScheme`]. The state (`min_val`, `max_val` and,
//! for the histogram, `histogram`) lives in [`RunningState`] buffers, so it is saved and restored
//! with the module record (commit pending updates first:
//! [`commit_running_state`](crate::quantize::commit_running_state)); a range not observed yet is
//! saved as `(+inf, -inf)` and loads as one. Per-channel state has one entry per channel from construction on
//! (PyTorch grows it on the first batch); that is why [`ObserverConfig::init`] takes the channel
//! count.
//!
//! # Non-finite inputs
//! PyTorch lets NaN (and, except for the histogram observer, ±inf) into the running min/max and
//! then produces NaN or infinite scales. Here a scale never becomes NaN:
//! - [`Observer::observe`] (strict) rejects a batch that holds any NaN or ±inf with
//!   [`Error::Quant`], leaving the state unchanged (the histogram observer ignores ±inf values as
//!   PyTorch does, with a warning on stderr, and rejects NaN);
//! - [`Observer::forward`], what models call, skips such a batch instead: the state is left
//!   unchanged, [`Observer::skipped_batches`] counts it, and the first one prints a warning.
//!   A diverging training run is caught by its non-finite loss, not by an observer error in
//!   the middle of a forward pass.
//!
//! # Devices
//! Where the CPU kernels run (flex) the batch range is read to the host and the state updated
//! there. Elsewhere (wgpu, CUDA) [`Observer::forward`] of a min/max observer updates the state
//! with device tensors and reads nothing back (`observer/device.rs`): a non-finite batch is
//! skipped by a mask on the device, counted in a device tensor that
//! [`Observer::skipped_batches`] reads, and not warned about. The histogram observer
//! (post-training calibration) and the strict [`Observer::observe`] read the batch on every
//! device.

pub(crate) mod device;
pub mod histogram;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::config::Config;
use burn::module::{Module, RunningState};
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::qparams::{ObserverQParamsSpec, QParams, observer_qparams};
use super::scheme::{QScheme, QuantDtype, calculate_qmin_qmax};
use crate::ops::{has_cpu_kernels, min_max_rows};
use crate::state::host_read;
use crate::{Error, Result};

/// Which statistic an [`Observer`] keeps.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum ObserverKind {
    /// Running minimum and maximum (`MinMaxObserver`, `PerChannelMinMaxObserver`).
    MinMax,
    /// Exponential moving average of the per-batch min/max
    /// (`MovingAverageMinMaxObserver`, `MovingAveragePerChannelMinMaxObserver`).
    MovingAverageMinMax,
    /// Running histogram with L2 range search (`HistogramObserver`, per-tensor only).
    Histogram,
}

/// Configuration of an [`Observer`] (the keyword arguments of PyTorch's observer classes).
#[derive(Config, Debug)]
pub struct ObserverConfig {
    /// The statistic kept.
    pub kind: ObserverKind,
    /// Quantized dtype (`dtype`, default `quint8`).
    #[config(default = "QuantDtype::QUInt8")]
    pub dtype: QuantDtype,
    /// Quantization scheme (`qscheme`, default per-tensor affine).
    #[config(default = "QScheme::PerTensorAffine")]
    pub qscheme: QScheme,
    /// Halve the integer range (`reduce_range`).
    #[config(default = false)]
    pub reduce_range: bool,
    /// Custom `(quant_min, quant_max)`; `None` uses the dtype's range.
    #[config(default = "None")]
    pub quant_range: Option<(i64, i64)>,
    /// Channel axis for per-channel schemes (`ch_axis`, default 0).
    #[config(default = 0)]
    pub ch_axis: usize,
    /// Averaging constant `c` of the moving-average observers (default 0.01).
    #[config(default = 0.01)]
    pub averaging_constant: f64,
    /// Number of histogram bins (default 2048).
    #[config(default = 2048)]
    pub bins: usize,
    /// Scale floor (`eps`, default `torch.finfo(torch.float32).eps`).
    #[config(default = 1.1920928955078125e-7)]
    pub eps: f64,
}

impl ObserverConfig {
    /// The effective `(quant_min, quant_max)` (see [`calculate_qmin_qmax`]).
    pub fn qmin_qmax(&self) -> Result<(i64, i64)> {
        calculate_qmin_qmax(self.dtype, self.quant_range, self.reduce_range)
    }

    /// Validates the configuration as PyTorch's constructors do.
    pub fn validate(&self) -> Result<()> {
        self.qmin_qmax()?;
        if self.kind == ObserverKind::Histogram && self.qscheme.is_per_channel() {
            return Err(Error::Config(
                "HistogramObserver only supports per-tensor schemes".into(),
            ));
        }
        if self.kind == ObserverKind::Histogram && self.bins == 0 {
            return Err(Error::Config(
                "HistogramObserver needs at least one bin".into(),
            ));
        }
        if self.qscheme.is_symmetric() && self.reduce_range && self.dtype == QuantDtype::QUInt8 {
            return Err(Error::Config(
                "cannot reduce range for symmetric quantization for quint8".into(),
            ));
        }
        if !(self.averaging_constant > 0.0 && self.averaging_constant <= 1.0) {
            return Err(Error::Config(format!(
                "averaging_constant must be in (0, 1], got {}",
                self.averaging_constant
            )));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::Config(format!(
                "eps must be positive, got {}",
                self.eps
            )));
        }
        Ok(())
    }

    /// Creates the observer. `channels` is the size of `ch_axis` for per-channel schemes (the
    /// state is allocated with that many entries); it is ignored for per-tensor schemes.
    pub fn init(&self, channels: usize, device: &Device) -> Result<Observer> {
        self.validate()?;
        let (quant_min, quant_max) = self.qmin_qmax()?;
        let n = if self.qscheme.is_per_channel() {
            if channels == 0 {
                return Err(Error::Config(
                    "a per-channel observer needs channels > 0".into(),
                ));
            }
            channels
        } else {
            1
        };
        let filled = |v: f32, len: usize| {
            RunningState::new(Tensor::<1>::from_data(
                TensorData::new(vec![v; len], [len]),
                device,
            ))
        };
        Ok(Observer {
            min_val: filled(f32::INFINITY, n),
            max_val: filled(f32::NEG_INFINITY, n),
            histogram: (self.kind == ObserverKind::Histogram).then(|| filled(0.0, self.bins)),
            quant_min,
            quant_max,
            config: self.clone(),
            skipped: Arc::default(),
            skipped_on_device: Arc::default(),
        })
    }
}

/// An observer's statistics on the host: running min and max (one entry per tensor or per
/// channel) and, for the histogram observer, its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserverStats {
    /// Running minimum.
    pub min: Vec<f32>,
    /// Running maximum.
    pub max: Vec<f32>,
    /// Histogram counts (histogram observer only).
    pub histogram: Option<Vec<f32>>,
}

/// An observer module; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Observer {
    /// Running minimum (one entry per tensor or per channel; `+inf` before any data).
    pub min_val: RunningState<Tensor<1>>,
    /// Running maximum (`-inf` before any data).
    pub max_val: RunningState<Tensor<1>>,
    /// Histogram counts (histogram observer only).
    pub histogram: Option<RunningState<Tensor<1>>>,
    quant_min: i64,
    quant_max: i64,
    #[module(skip)]
    config: ObserverConfig,
    /// Batches [`Observer::forward`] skipped for non-finite values (shared by clones, not saved).
    #[module(skip)]
    skipped: Arc<AtomicUsize>,
    /// Batches skipped on the device ([`device`]), a `[1]` count not read until asked for.
    #[module(skip)]
    skipped_on_device: Arc<Mutex<Option<Tensor<1>>>>,
}

/// Reads a rank-1 state tensor to the host.
pub(crate) fn read_state(state: &RunningState<Tensor<1>>) -> Vec<f32> {
    tensor_to_vec(state.value_sync())
}

/// Replaces a rank-1 state tensor with host values (on the state's device).
pub(crate) fn write_state(state: &RunningState<Tensor<1>>, values: Vec<f32>) {
    let device = state.value_sync().device();
    let n = values.len();
    state.update(Tensor::from_data(TensorData::new(values, [n]), &device));
}

/// A tensor's values as host f32.
pub(crate) fn tensor_to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    host_read::read_f32(t)
}

/// The error for a batch with NaN or ±inf values (a lenient observer skips it, see
/// [`Observer::lenient`]).
pub(crate) fn non_finite_batch() -> Error {
    Error::Quant(
        "observer input contains NaN or infinite values; refusing to update the range".into(),
    )
}

/// Per-tensor (`axis = None`) or per-channel min and max of a batch, read to the host.
/// Errors if the batch holds NaN or ±inf.
pub(crate) fn batch_min_max<const D: usize>(
    x: &Tensor<D>,
    axis: Option<usize>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let non_finite = || Err(non_finite_batch());
    // One pass over the batch instead of three, for the whole tensor or the channels of axis 0
    // (per-channel weight observers).
    let rows = match axis {
        None => Some(1),
        Some(0) => Some(x.dims()[0]),
        Some(_) => None,
    };
    if let Some(rows) = rows
        && x.shape().num_elements() > 0
        && has_cpu_kernels(&x.device())
        && x.dtype() == DType::F32
    {
        let (mn, mx, finite) = min_max_rows(x, rows);
        return if finite { Ok((mn, mx)) } else { non_finite() };
    }
    let x = x.clone().detach();
    // 0·x sums to 0 unless some element is NaN or ±inf.
    let probe = host_read::read_f32(x.clone().mul_scalar(0.0).sum())[0];
    if probe != 0.0 {
        return non_finite();
    }
    match axis {
        None => {
            let mn = tensor_to_vec(x.clone().min());
            let mx = tensor_to_vec(x.max());
            Ok((mn, mx))
        }
        Some(axis) => {
            if axis >= D {
                return Err(Error::Shape(format!(
                    "channel axis {axis} is out of range for a rank-{D} input"
                )));
            }
            let channels = x.dims()[axis];
            let y: Tensor<2> = x.swap_dims(0, axis).reshape([channels as i64, -1]);
            let mn = tensor_to_vec(y.clone().min_dim(1));
            let mx = tensor_to_vec(y.max_dim(1));
            Ok((mn, mx))
        }
    }
}

/// The moving-average update of `fused_obs_fake_quant.cpp` / `MovingAverageMinMaxObserver`:
/// an infinite running value is replaced by the batch value, otherwise
/// `running + c * (batch - running)` in f32.
pub(crate) fn moving_average(running: &mut [f32], batch: &[f32], c: f32) {
    for (r, &b) in running.iter_mut().zip(batch) {
        *r = if r.is_infinite() {
            b
        } else {
            *r + c * (b - *r)
        };
    }
}

impl Observer {
    /// The configuration this observer was built from.
    pub fn config(&self) -> &ObserverConfig {
        &self.config
    }

    /// Effective `quant_min` (after `reduce_range`).
    pub fn quant_min(&self) -> i64 {
        self.quant_min
    }

    /// Effective `quant_max` (after `reduce_range`).
    pub fn quant_max(&self) -> i64 {
        self.quant_max
    }

    /// The quantization scheme.
    pub fn qscheme(&self) -> QScheme {
        self.config.qscheme
    }

    /// The quantized dtype.
    pub fn dtype(&self) -> QuantDtype {
        self.config.dtype
    }

    /// Channel axis (meaningful for per-channel schemes).
    pub fn ch_axis(&self) -> usize {
        self.config.ch_axis
    }

    /// Records statistics of `x` and returns it unchanged (PyTorch's `observer(x)`); a batch
    /// with non-finite values is skipped and counted (see the [module docs](self)).
    ///
    /// # Panics
    /// If `x` does not have the channel count this per-channel observer was built for — a
    /// model-construction bug, like a shape mismatch in any tensor operation.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.on_device(&x) {
            self.observe_on_device(&x);
        } else {
            self.observe_lenient(&x);
        }
        x
    }

    /// Whether this observer updates on the device for `x` (see [`device`]): a min/max observer
    /// and a device without the CPU kernels.
    pub(crate) fn on_device<const D: usize>(&self, x: &Tensor<D>) -> bool {
        self.config.kind != ObserverKind::Histogram && !has_cpu_kernels(&x.device())
    }

    /// [`Observer::observe`], skipping (and counting) non-finite batches; panics on shape errors.
    /// Returns the statistics written, `None` for a skipped batch.
    pub(crate) fn observe_lenient<const D: usize>(&self, x: &Tensor<D>) -> Option<ObserverStats> {
        self.lenient(self.observe_stats(x))
    }

    /// An observation's statistics, with a non-finite batch skipped (warned about once, then
    /// counted) instead of an error; panics on shape errors.
    pub(crate) fn lenient(&self, observed: Result<Option<ObserverStats>>) -> Option<ObserverStats> {
        match observed {
            Ok(stats) => stats,
            Err(Error::Quant(reason)) => {
                if self.skipped.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("warning: {reason}; batch skipped (further ones are only counted)");
                }
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// How many batches [`Observer::forward`] skipped because they held NaN or ±inf (those
    /// skipped on the device are read back here, see the [module docs](self)).
    pub fn skipped_batches(&self) -> usize {
        let on_device = self
            .skipped_on_device
            .lock()
            .expect("skip counter lock")
            .clone()
            .map_or(0.0, |count| tensor_to_vec(count)[0]);
        self.skipped.load(Ordering::Relaxed) + on_device as usize
    }

    /// Records statistics of `x`. Empty tensors are ignored; non-finite values are handled as
    /// described in the [module docs](self).
    pub fn observe<const D: usize>(&self, x: &Tensor<D>) -> Result<()> {
        self.observe_stats(x).map(|_| ())
    }

    /// [`Observer::observe`], returning the statistics it wrote (`None` for an empty tensor).
    /// Callers use these rather than reading the state back: under data-parallel training a
    /// read-back after a write would fold in the other replicas' pending updates mid-step (see
    /// [`crate::finetune::data_parallel`]).
    pub(crate) fn observe_stats<const D: usize>(
        &self,
        x: &Tensor<D>,
    ) -> Result<Option<ObserverStats>> {
        self.observe_range(x, false)
    }

    /// [`Observer::observe_stats`] of `relu(x)` without computing it: ReLU is monotone, so the
    /// batch's range is ReLU of `x`'s. Histogram observers are not supported (an error). A
    /// non-finite `x` is a [`Error::Quant`] even where `relu(x)` is finite (`-inf`): the caller
    /// then observes `relu(x)` itself.
    pub(crate) fn observe_stats_after_relu<const D: usize>(
        &self,
        x: &Tensor<D>,
    ) -> Result<Option<ObserverStats>> {
        self.observe_range(x, true)
    }

    fn observe_range<const D: usize>(
        &self,
        x: &Tensor<D>,
        after_relu: bool,
    ) -> Result<Option<ObserverStats>> {
        if x.shape().num_elements() == 0 {
            return Ok(None);
        }
        match self.config.kind {
            ObserverKind::Histogram if after_relu => Err(Error::Config(
                "a histogram observer needs the ReLU's output itself".into(),
            )),
            ObserverKind::Histogram => self.observe_histogram(x),
            _ => {
                let axis = self.qscheme().is_per_channel().then_some(self.ch_axis());
                let (mut bmin, mut bmax) = batch_min_max(x, axis)?;
                if after_relu {
                    for v in bmin.iter_mut().chain(&mut bmax) {
                        *v = if *v > 0.0 { *v } else { 0.0 }; // +0.0, as ReLU gives
                    }
                }
                self.record_range(bmin, bmax)
            }
        }
    }

    /// Folds a finite batch range (one value, or one per channel) into the running range: the
    /// plain or moving-average min/max update. For callers that computed the batch's range
    /// themselves (the QAT ConvBn weight, see `ops::scaled_fake_quant`); histogram observers
    /// need the values (an error).
    pub(crate) fn record_range(
        &self,
        bmin: Vec<f32>,
        bmax: Vec<f32>,
    ) -> Result<Option<ObserverStats>> {
        match self.config.kind {
            ObserverKind::Histogram => Err(Error::Config(
                "a histogram observer needs the values, not their range".into(),
            )),
            kind => {
                let mut min = read_state(&self.min_val);
                let mut max = read_state(&self.max_val);
                if bmin.len() != min.len() {
                    return Err(Error::Shape(format!(
                        "observer was built for {} channels but the input has {} along axis {}",
                        min.len(),
                        bmin.len(),
                        self.ch_axis()
                    )));
                }
                if kind == ObserverKind::MinMax {
                    for i in 0..min.len() {
                        min[i] = min[i].min(bmin[i]);
                        max[i] = max[i].max(bmax[i]);
                    }
                } else {
                    let c = self.config.averaging_constant as f32;
                    moving_average(&mut min, &bmin, c);
                    moving_average(&mut max, &bmax, c);
                }
                write_state(&self.min_val, min.clone());
                write_state(&self.max_val, max.clone());
                Ok(Some(ObserverStats {
                    min,
                    max,
                    histogram: None,
                }))
            }
        }
    }

    fn observe_histogram<const D: usize>(&self, x: &Tensor<D>) -> Result<Option<ObserverStats>> {
        let values = tensor_to_vec(x.clone().detach());
        if values.iter().any(|v| v.is_nan()) {
            return Err(Error::Quant(
                "observer input contains NaN values; refusing to update the histogram".into(),
            ));
        }
        let hist_state = self
            .histogram
            .as_ref()
            .expect("histogram observer has a histogram");
        let mut state = histogram::HistogramState {
            histogram: read_state(hist_state),
            min_val: read_state(&self.min_val)[0],
            max_val: read_state(&self.max_val)[0],
        };
        state.observe(&values);
        write_state(hist_state, state.histogram.clone());
        write_state(&self.min_val, vec![state.min_val]);
        write_state(&self.max_val, vec![state.max_val]);
        Ok(Some(ObserverStats {
            min: vec![state.min_val],
            max: vec![state.max_val],
            histogram: Some(state.histogram),
        }))
    }

    /// The recorded statistics as host vectors.
    pub fn stats(&self) -> ObserverStats {
        let (min, max) = self.min_max();
        ObserverStats {
            min,
            max,
            histogram: self.histogram_values(),
        }
    }

    /// Running `(min_val, max_val)` as host vectors.
    pub fn min_max(&self) -> (Vec<f32>, Vec<f32>) {
        (read_state(&self.min_val), read_state(&self.max_val))
    }

    /// Histogram counts (histogram observer only).
    pub fn histogram_values(&self) -> Option<Vec<f32>> {
        self.histogram.as_ref().map(read_state)
    }

    /// Forgets everything seen so far (`reset_min_max_vals`).
    pub fn reset_min_max_vals(&self) {
        let n = self.min_val.value_sync().dims()[0];
        write_state(&self.min_val, vec![f32::INFINITY; n]);
        write_state(&self.max_val, vec![f32::NEG_INFINITY; n]);
        if let Some(h) = &self.histogram {
            write_state(h, vec![0.0; self.config.bins]);
        }
    }

    /// The data-independent parameters of the Python qparams formula.
    pub fn qparams_spec(&self) -> ObserverQParamsSpec {
        ObserverQParamsSpec {
            qscheme: self.config.qscheme,
            dtype: self.config.dtype,
            quant_min: self.quant_min,
            quant_max: self.quant_max,
            has_customized_qrange: self.config.quant_range.is_some(),
            eps: self.config.eps as f32,
        }
    }

    /// Scale and zero-point from the recorded statistics with the Python observer formula
    /// ([`observer_qparams`]); the histogram observer first narrows the range with its L2 search.
    /// An observer that saw nothing returns PyTorch's default (scale 1, zero-point 0) and prints
    /// a warning.
    pub fn calculate_qparams(&self) -> Result<QParams> {
        self.qparams_of(&self.stats())
    }

    /// [`Observer::calculate_qparams`] for the given statistics.
    pub(crate) fn qparams_of(&self, stats: &ObserverStats) -> Result<QParams> {
        let (mut min, mut max) = (stats.min.clone(), stats.max.clone());
        if let Some(h) = &stats.histogram
            && !(min[0] == f32::INFINITY && max[0] == f32::NEG_INFINITY)
        {
            let state = histogram::HistogramState {
                histogram: h.clone(),
                min_val: min[0],
                max_val: max[0],
            };
            let dst_nbins = 1u64 << self.config.dtype.bits().min(32);
            let (new_min, new_max) = state.non_linear_param_search(dst_nbins as f64);
            min = vec![new_min];
            max = vec![new_max];
        }
        observer_qparams(&min, &max, &self.qparams_spec()).ok_or_else(|| {
            Error::Quant(format!(
                "observer state is inconsistent (min {min:?} > max {max:?} or NaN)"
            ))
        })
    }
}
