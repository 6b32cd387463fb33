//! State that survives a round trip: a QAT MobileNetV2 saved in the middle of training (observers
//! off, batch norm frozen) and loaded into a freshly prepared model keeps its switches, qparams,
//! observer ranges and batch-norm freeze, and the next SGD step (momentum restored with the
//! optimizer state) is the in-memory model's, bit for bit: loss, every parameter and buffer.

use std::collections::BTreeMap;

use crate::common::recipes::small_qat_mobilenet_v2;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use burn_qat::models::MobileNetV2;
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::QParams;
use burn_qat::quantize::{
    commit_running_state, disable_observer, for_each_batch_norm, for_each_fake_quant,
    freeze_bn_stats,
};
use burn_store::{BurnpackStore, ModuleSnapshot};

/// Batch `i`: 4 images of 3×32×32 with values in [-2, 2), and their labels.
fn batch(i: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let n = 4 * 3 * 32 * 32;
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    let x = Tensor::from_data(TensorData::new(values, [4, 3, 32, 32]), device);
    let labels: Vec<i64> = (0..4).map(|j| ((i * 7 + j * 3) % 10) as i64).collect();
    (x, Tensor::from_data(TensorData::new(labels, [4]), device))
}

fn sgd() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init()
}

/// One SGD step on batch `i`; the loss's bits.
fn step(model: MobileNetV2, optim: &mut ModuleOptimizer, i: usize) -> (MobileNetV2, u32) {
    let device = model.devices()[0].clone();
    let (x, y) = batch(i, &device);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(model.forward(x), y);
    let value = loss.clone().into_scalar::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(0.01, model, grads), value.to_bits())
}

/// The burnpack bytes of `model` (as the fine-tuning checkpoints write them), its pending
/// running-state updates committed first (the last step's batch-norm statistics).
fn save(model: &MobileNetV2) -> Vec<u8> {
    commit_running_state(model);
    let mut store = BurnpackStore::from_bytes(None);
    model.save_into(&mut store).unwrap();
    store.get_bytes().unwrap().to_vec()
}

/// Loads `bytes` into `model`, every entry in place.
fn load(model: &mut MobileNetV2, bytes: Vec<u8>) {
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
    let applied = model.load_from(&mut store).unwrap();
    assert!(
        applied.missing.is_empty() && applied.unused.is_empty() && applied.errors.is_empty(),
        "missing {:?}, unused {:?}, errors {:?}",
        applied.missing,
        applied.unused,
        applied.errors
    );
}

/// What decides a QAT model's next step besides its tensors' values: per fake-quant, its
/// switches (observer, fake-quant), qparams and observed range; per batch norm, whether it
/// trains.
#[derive(Debug, PartialEq)]
struct Switches {
    fake_quants: Vec<(bool, bool)>,
    bn_training: Vec<bool>,
    qparams: Vec<QParams>,
    ranges: Vec<(Vec<f32>, Vec<f32>)>,
}

fn switches(model: &MobileNetV2) -> Switches {
    let mut model = model.clone();
    let (mut fake_quants, mut qparams, mut ranges) = (vec![], vec![], vec![]);
    for_each_fake_quant(&mut model, |fq| {
        fake_quants.push((fq.observer_enabled(), fq.fake_quant_enabled()));
        qparams.push(fq.current_qparams());
        ranges.push(fq.activation_post_process.min_max());
    });
    let mut bn_training = vec![];
    for_each_batch_norm(&mut model, |bn| bn_training.push(bn.training()));
    Switches {
        fake_quants,
        bn_training,
        qparams,
        ranges,
    }
}

/// `actual` has `expected`'s switches, qparams and ranges (messages short enough to read).
fn assert_same_switches(actual: &Switches, expected: &Switches, what: &str) {
    let on = |s: &Switches| {
        let observing = s.fake_quants.iter().filter(|f| f.0).count();
        let quantizing = s.fake_quants.iter().filter(|f| f.1).count();
        let training = s.bn_training.iter().filter(|&&t| t).count();
        format!(
            "{observing} of {} observers on, {quantizing} fake-quants on, {training} of {} batch \
             norms training",
            s.fake_quants.len(),
            s.bn_training.len()
        )
    };
    assert_eq!(on(actual), on(expected), "{what}: switches");
    assert_eq!(actual.fake_quants, expected.fake_quants, "{what}: switches");
    assert_eq!(actual.bn_training, expected.bn_training, "{what}: BN");
    assert!(actual.qparams == expected.qparams, "{what}: qparams differ");
    assert!(
        actual.ranges == expected.ranges,
        "{what}: observer ranges differ"
    );
}

/// Every tensor of the record (parameters, buffers, switches) by name: dtype, shape and bytes.
fn tensors(model: &MobileNetV2) -> BTreeMap<String, (String, Vec<u8>)> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let kind = format!("{:?} {:?}", t.dtype, t.shape);
            (t.name.clone(), (kind, t.to_bytes().unwrap().to_vec()))
        })
        .collect()
}

/// `actual` holds `expected`'s tensors, bit for bit.
fn assert_same_tensors(actual: &MobileNetV2, expected: &MobileNetV2, what: &str) {
    let (actual, expected) = (tensors(actual), tensors(expected));
    let names = |m: &BTreeMap<_, _>| m.keys().cloned().collect::<Vec<String>>();
    assert_eq!(names(&actual), names(&expected), "{what}: tensor names");
    for (name, value) in &expected {
        assert!(actual[name] == *value, "{what}: {name} differs");
    }
}

#[test]
fn a_reloaded_qat_model_takes_the_in_memory_models_next_step() {
    let device = Device::flex().autodiff();
    let mut model = small_qat_mobilenet_v2(&device);
    let mut optim = sgd();
    for i in 0..2 {
        (model, _) = step(model, &mut optim, i);
    }
    disable_observer(&mut model);
    freeze_bn_stats(&mut model);
    let saved = switches(&model);
    assert!(saved.fake_quants.iter().all(|&(obs, fq)| !obs && fq));
    assert!(saved.bn_training.iter().all(|&t| !t));

    // The record names them as PyTorch's state dict does (and `freeze_bn` on every batch norm).
    let names = tensors(&model);
    let count = |suffix: &str| names.keys().filter(|n| n.ends_with(suffix)).count();
    assert_eq!(count(".observer_enabled"), saved.fake_quants.len());
    assert_eq!(count(".fake_quant_enabled"), saved.fake_quants.len());
    assert_eq!(count(".freeze_bn"), saved.bn_training.len());
    assert!(names.contains_key("stem.weight_fake_quant.observer_enabled"));

    let model_bytes = save(&model);
    let optim_bytes = optim.into_bytes().unwrap();
    // The user's workflow: the model built as before (same prepare_qat), then loaded.
    let mut reloaded = small_qat_mobilenet_v2(&device);
    load(&mut reloaded, model_bytes);
    let mut reloaded_optim = sgd().from_bytes(optim_bytes).unwrap();
    assert_same_switches(&switches(&reloaded), &saved, "the loaded model");
    assert_same_tensors(&reloaded, &model, "the loaded model");

    let (model, loss) = step(model, &mut optim, 2);
    let (reloaded, reloaded_loss) = step(reloaded, &mut reloaded_optim, 2);
    assert_eq!(reloaded_loss, loss, "the next step's loss");
    assert_same_switches(
        &switches(&reloaded),
        &switches(&model),
        "after the next step",
    );
    assert_same_tensors(&reloaded, &model, "after the next step");
}

#[test]
fn switching_a_copy_leaves_the_original() {
    let device = Device::flex().autodiff();
    let model = small_qat_mobilenet_v2(&device);
    let before = switches(&model);
    let mut copy = model.clone();
    disable_observer(&mut copy);
    freeze_bn_stats(&mut copy);
    assert_same_switches(&switches(&model), &before, "the original");
    let copied = switches(&copy);
    assert!(copied.fake_quants.iter().all(|&(obs, _)| !obs));
    assert!(copied.bn_training.iter().all(|&t| !t));
}
