//! QAT without host synchronisation (issue #29): a QAT training step on the generic path —
//! the code a GPU backend runs — reads nothing back to the host. Observers, the moving
//! average, scale and zero-point (LSQ's learned ones too) and the switches stay device tensors,
//! and so does the data-parallel commit of replica statistics; the crate's reads all go
//! through one counted door (`burn_qat::state::host_read`), which must not move meanwhile.
//!
//! Without a GPU the generic path runs on flex (`burn_qat::ops::force_generic_path`); in a
//! `--features wgpu` build the same steps run on `common::gpu_device` too (lavapipe in CI).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_qat::finetune::data_parallel::commit_replica_statistics;
use burn_qat::nn::ImageClassifier;
use burn_qat::ops::force_generic_path;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{
    disable_observer, enable_observer, enable_param_learning, for_each_fake_quant, freeze_bn_stats,
};
use burn_qat::state::host_read::host_reads;

use crate::common::recipes::small_qat_mobilenet_v2_with;

/// A deterministic batch of four 32×32 images and their labels.
fn batch(step: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let n = 4 * 3 * 32 * 32;
    let pixels: Vec<f32> = (0..n)
        .map(|i| (((i * 7919 + step * 104_729) % 1013) as f32 / 1013.0 - 0.5) * 4.0)
        .collect();
    let labels: Vec<i64> = (0..4).map(|i| ((i + step) % 10) as i64).collect();
    (
        Tensor::from_data(TensorData::new(pixels, [4, 3, 32, 32]), device),
        Tensor::from_data(TensorData::new(labels, [4]), device),
    )
}

/// The qconfigs checked: PyTorch's default QAT ones (fused fake-quant, per-tensor and
/// per-channel weights) and LSQ with 4-bit weights.
fn qconfigs() -> Vec<(&'static str, QConfig)> {
    vec![
        ("qnnpack", QConfig::default_qat(QuantBackend::Qnnpack)),
        ("x86", QConfig::default_qat(QuantBackend::X86)),
        (
            "x86 LSQ 4-bit",
            QConfig::lsq_qat(QuantBackend::X86, 4).unwrap(),
        ),
    ]
}

/// Four SGD steps (observers off, LSQ learning and batch norm frozen before the third) with no
/// host read in any of them, switches included, and the data-parallel commit of replica
/// statistics (with the observers on again) without one either; then checks that the counter
/// does count.
fn steps_without_reads(device: &Device, (name, qconfig): (&str, QConfig)) {
    let mut model = small_qat_mobilenet_v2_with(&qconfig, device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    for step in 0..4 {
        let before = host_reads();
        if step == 2 {
            enable_param_learning(&mut model);
            disable_observer(&mut model);
            freeze_bn_stats(&mut model);
        }
        let (x, y) = batch(step, device);
        let loss = loss_fn.forward(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
        assert_eq!(
            host_reads() - before,
            0,
            "{name}: host reads during QAT step {step}"
        );
    }
    let before = host_reads();
    enable_observer(&mut model);
    let (x, _) = batch(4, device);
    let _ = model.forward(x);
    commit_replica_statistics(&mut model);
    assert_eq!(
        host_reads() - before,
        0,
        "{name}: host reads committing replica statistics"
    );
    let before = host_reads();
    let mut scales = Vec::new();
    for_each_fake_quant(&mut model, |fq| scales.extend(fq.current_qparams().scale));
    assert!(host_reads() > before, "reading the qparams back is counted");
    assert!(
        scales.iter().all(|s| s.is_finite() && *s > 0.0) && scales.iter().any(|&s| s != 1.0),
        "{name}: the observers ran: {scales:?}"
    );
}

#[test]
fn qat_steps_on_the_generic_path_do_not_read_back() {
    let _generic = force_generic_path();
    let device = Device::flex().autodiff();
    for qconfig in qconfigs() {
        steps_without_reads(&device, qconfig);
    }
}

#[test]
fn qat_steps_on_the_gpu_backend_do_not_read_back() {
    let Some(gpu) = crate::common::gpu_device() else {
        return;
    };
    for qconfig in qconfigs() {
        steps_without_reads(&gpu.clone().autodiff(), qconfig);
    }
}
