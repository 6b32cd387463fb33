//! Quantization numerics: schemes, qparams, observers, fake-quant and qconfigs (see issue #3),
//! bit-compatible with PyTorch's eager-mode `torch.ao.quantization` (torch 2.5.1).
//!
//! Building blocks, in dependency order:
//! - [`scheme`]: dtypes ([`QuantDtype`]), schemes ([`QScheme`]) and integer ranges;
//! - [`qparams`]: the two scale/zero-point formulas PyTorch uses ([`QParamsCalculator`]);
//! - [`observer`]: min/max, moving-average and histogram observers ([`Observer`]);
//! - [`functional`]: the fake-quant function with its straight-through gradient;
//! - [`fake_quantize`]: the [`FakeQuantize`] module (observer + fake-quant);
//! - [`learnable_fake_quantize`]: LSQ ([`LearnableFakeQuantize`]);
//! - [`learnable`]: LSQ inside a [`FakeQuantize`], as [`QConfig::lsq_qat`] attaches it;
//! - [`qconfig`]: [`QConfig`] and PyTorch's default presets.
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! use burn_qat::quant::{QConfig, QuantBackend};
//!
//! # fn main() -> burn_qat::Result<()> {
//! let device = Device::flex().autodiff();
//! let qconfig = QConfig::default_qat(QuantBackend::Qnnpack);
//! let act_fq = qconfig.activation.fake_quantize().init(1, &device)?;
//! let weight_fq = qconfig.weight.fake_quantize().init(32, &device)?; // 32 output channels
//! let x = Tensor::<4>::ones([1, 32, 8, 8], &device);
//! let y = act_fq.forward(x);
//! # let _ = (weight_fq, y);
//! # Ok(())
//! # }
//! ```

pub(crate) mod device_qparams;
pub mod fake_quantize;
mod fake_quantize_device;
pub mod fixed_qparams_fake_quantize;
pub mod functional;
pub mod learnable;
pub mod learnable_fake_quantize;
pub mod observer;
pub mod qconfig;
pub mod qconfig_mapping;
pub mod qparams;
pub mod scheme;

pub use fake_quantize::{FakeQuantize, FakeQuantizeConfig};
pub use fixed_qparams_fake_quantize::{FixedQParamsFakeQuantize, FixedQParamsObserver};
pub use functional::{fake_quantize_per_channel, fake_quantize_per_tensor};
pub use learnable::{LearnableQParams, LearnableQParamsConfig};
pub use learnable_fake_quantize::{LearnableFakeQuantize, LearnableFakeQuantizeConfig};
pub use observer::{Observer, ObserverConfig, ObserverKind, ObserverStats};
pub use qconfig::{QConfig, QuantBackend, Quantizer};
pub use qconfig_mapping::QConfigMapping;
pub use qparams::{
    ObserverQParamsSpec, QParams, QParamsCalculator, fbgemm_choose_qparams, fbgemm_qparams,
    observer_qparams,
};
pub use scheme::{QScheme, QuantDtype, calculate_qmin_qmax};
