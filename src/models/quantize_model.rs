//! torchvision's `quantize_model(model, backend)` (`models/quantization/utils.py`), what its
//! builders do for `quantize = True` without pretrained weights, for every family.

use burn::tensor::{Device, Tensor, TensorData};

use super::torchvision_model::TorchvisionModel;
use crate::Result;
use crate::convert::convert;
use crate::int8::Engine;
use crate::nn::ImageClassifier;
use crate::quant::{QConfig, QuantBackend};
use crate::quantize::prepare;

/// Side of torchvision's calibration image (`torch.rand(1, 3, 299, 299)`).
pub const CALIBRATION_SIZE: usize = 299;

/// torchvision's `quantize_model(model, backend)`: `fuse_model()` in eval mode, `prepare` with
/// [`QConfig::torchvision`]`(backend)`, one calibration pass on a `[1, 3, 299, 299]` batch of
/// values in [0, 1), and `convert` for `backend`'s engine. The model comes back converted (run
/// it with `forward_int8`).
///
/// torchvision calibrates on `torch.rand`; here the batch is [`calibration_input`], a fixed
/// hash of the index, so that the result is reproducible (and a script can rebuild it).
/// `backend` is `fbgemm` (x86 arithmetic) or `qnnpack`, the two torchvision sets a qconfig for.
pub fn quantize_model<M: TorchvisionModel>(
    model: &mut M,
    backend: QuantBackend,
    device: &Device,
) -> Result<()> {
    let qconfig = QConfig::torchvision(backend)?;
    let engine = Engine::from_backend(backend)?;
    model.fuse_model(Some(false))?;
    prepare(model, qconfig, device)?;
    let s = CALIBRATION_SIZE;
    let x = Tensor::<4>::from_data(TensorData::new(calibration_input(), [1, 3, s, s]), device);
    let _ = ImageClassifier::forward(model, x);
    convert(model, engine)
}

/// The calibration batch of [`quantize_model`], `[1, 3, 299, 299]` flattened: value `i` is
/// `(crate::bench::bench_input(1, 299)[i] + 2) / 4`, uniform-looking in [0, 1) as
/// `torch.rand`'s.
pub fn calibration_input() -> Vec<f32> {
    crate::bench::bench_input(1, CALIBRATION_SIZE)
        .into_iter()
        .map(|v| (v + 2.0) / 4.0)
        .collect()
}
