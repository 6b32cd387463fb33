//! Data-parallel QAT on two CPU devices through burn-train's `Learner`
//! (`burn_qat::finetune::data_parallel`): the documented rule for running statistics, and
//! gradients equal to single-device training on the union of the replicas' batches.

use crate::common::recipes::small_qat_mobilenet_v2;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_qat::data::{Image, ImageDataset};
use burn_qat::finetune::FinetuneData;
use burn_qat::finetune::data_parallel::{DataParallelConfig, fit_data_parallel};
use burn_qat::models::MobileNetV2;
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QParamsCalculator, fbgemm_qparams};
use burn_qat::quantize::{
    disable_observer, for_each_batch_norm, for_each_fake_quant, freeze_bn_stats,
};

const BATCH: usize = 6;

/// An independent trainable copy (module clones share their running statistics; `valid()`
/// gives new ones).
fn copy_of(model: &MobileNetV2, device: &Device) -> MobileNetV2 {
    model.valid().train().fork(device)
}

fn subset(data: &ImageDataset, range: std::ops::Range<usize>) -> ImageDataset {
    ImageDataset {
        images: data.images[range.clone()].to_vec(),
        labels: data.labels[range].to_vec(),
        classes: data.classes.clone(),
    }
}

fn batch(
    data: &FinetuneData,
    split: &ImageDataset,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let images: Vec<&Image> = split.images.iter().collect();
    let x = data.transform.batch(&images, device).unwrap();
    let labels: Vec<i64> = split.labels.iter().map(|&l| l as i64).collect();
    let y = Tensor::from_data(TensorData::new(labels, [split.len()]), device);
    (x, y)
}

/// Every running statistic of the model, in visiting order: batch-norm mean and variance,
/// observer min and max, fake-quant scale.
fn statistics(model: &mut MobileNetV2) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for_each_batch_norm(model, |bn| {
        out.push(bn.running_mean().into_data().try_to_vec::<f32>().unwrap());
        out.push(bn.running_var().into_data().try_to_vec::<f32>().unwrap());
    });
    for_each_fake_quant(model, |fq| {
        let (min, max) = fq.activation_post_process.min_max();
        out.push(min);
        out.push(max);
    });
    out
}

/// Every float value the model holds (parameters and buffers), in visiting order.
fn params<M: Module>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0
                .extend(param.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

fn two_cpu_devices() -> Vec<Device> {
    vec![Device::flex(), Device::flex()]
}

/// One unshuffled epoch of `fit_data_parallel` on a copy of `model` on two CPU devices: with
/// `train` two batches long, device 0 takes the first batch and device 1 the second, one step.
fn one_epoch_on_two_devices(
    model: &MobileNetV2,
    lr: f64,
    data: &FinetuneData,
    train: &ImageDataset,
    valid: &ImageDataset,
) -> MobileNetV2 {
    let config = DataParallelConfig::new()
        .with_lr(lr)
        .with_batch_size(BATCH)
        .with_shuffle(false);
    let dir = tempfile::tempdir().unwrap();
    fit_data_parallel(
        copy_of(model, &Device::flex().autodiff()),
        train,
        valid,
        &data.transform,
        &two_cpu_devices(),
        &config,
        dir.path(),
    )
    .unwrap()
}

#[test]
fn replicas_commit_the_mean_of_their_statistics_updates() {
    let device = Device::flex().autodiff();
    let data = FinetuneData::embedded_mnist().unwrap();
    // Unshuffled: device 0 gets the first batch, device 1 the second — one step.
    let (shard_a, shard_b) = (
        subset(&data.train, 0..BATCH),
        subset(&data.train, BATCH..2 * BATCH),
    );
    let train = subset(&data.train, 0..2 * BATCH);
    let valid = subset(&data.test, 0..4);
    let model = small_qat_mobilenet_v2(&device);

    // Each replica's update, computed on its own from the same starting state.
    let mut expected = Vec::new();
    for shard in [&shard_a, &shard_b] {
        let mut replica = copy_of(&model, &device);
        let _ = replica.forward(batch(&data, shard, &device).0);
        expected.push(statistics(&mut replica));
    }

    let mut trained = one_epoch_on_two_devices(&model, 0.0, &data, &train, &valid);

    let got = statistics(&mut trained);
    assert_eq!(got.len(), expected[0].len());
    let mut moved = 0;
    for (i, g) in got.iter().enumerate() {
        let (a, b) = (&expected[0][i], &expected[1][i]);
        for j in 0..g.len() {
            // Burn's RunningState mean of two updates: (a + b) / 2 in f32.
            let mean = (a[j] + b[j]) / 2.0;
            assert!(
                g[j] == mean || (g[j] - mean).abs() <= 1e-6 * mean.abs().max(1.0),
                "statistic {i}[{j}]: {} but the mean of the replicas' updates is {mean} ({} and {})",
                g[j],
                a[j],
                b[j]
            );
            moved += usize::from(a[j] != b[j]);
        }
    }
    // The shards differ, so the test sees a real mean and not two equal updates.
    assert!(
        moved > 100,
        "only {moved} statistics differ between the shards"
    );

    // Scales follow the committed ranges, with each fake-quant's own formula (not the mean of
    // the replicas' scales).
    let mut checked = 0;
    for_each_fake_quant(&mut trained, |fq| {
        let obs = &fq.activation_post_process;
        let (min, max) = obs.min_max();
        if min.iter().chain(&max).any(|v| v.is_infinite()) {
            return;
        }
        let want = match fq.calculator() {
            QParamsCalculator::Observer => fq.calculate_qparams().unwrap(),
            QParamsCalculator::Fbgemm => fbgemm_qparams(
                &min,
                &max,
                obs.quant_min(),
                obs.quant_max(),
                obs.qscheme().is_symmetric(),
            ),
        };
        assert_eq!(fq.current_qparams(), want);
        checked += 1;
    });
    assert!(checked > 10, "only {checked} fake-quants observed anything");
}

#[test]
fn two_devices_train_as_one_device_on_the_union_batch() {
    let device = Device::flex().autodiff();
    let data = FinetuneData::embedded_mnist().unwrap();
    let train = subset(&data.train, 0..2 * BATCH);
    let valid = subset(&data.test, 0..4);
    let mut model = small_qat_mobilenet_v2(&device);
    // Calibrate, then fix every per-batch statistic: frozen batch norm and observers make each
    // sample's loss independent of the rest of its batch, so the mean of the two replicas'
    // gradients is the gradient of the union batch.
    let _ = model.forward(batch(&data, &train, &device).0);
    disable_observer(&mut model);
    freeze_bn_stats(&mut model);
    let lr = 0.05;

    let mut single = copy_of(&model, &device);
    let (x, y) = batch(&data, &train, &device);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(single.forward(x), y);
    let grads = GradientsParams::from_grads(loss.backward(), &single);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    single = optim.step(lr, single, grads);

    let parallel = one_epoch_on_two_devices(&model, lr, &data, &train, &valid);

    let (before, want, got) = (params(&model), params(&single), params(&parallel));
    assert_eq!(want.len(), got.len());
    let changed = before.iter().zip(&want).filter(|(b, w)| b != w).count();
    assert!(
        changed > want.len() / 2,
        "the step changed only {changed} values"
    );
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(
            w == g || (w - g).abs() <= 1e-5 + 1e-4 * w.abs(),
            "parameter value {i}: two devices give {g}, one device on the union batch {w}"
        );
    }
}

#[test]
fn bad_settings_are_errors() {
    let device = Device::flex().autodiff();
    let data = FinetuneData::embedded_mnist().unwrap();
    let train = subset(&data.train, 0..4);
    let dir = tempfile::tempdir().unwrap();
    let fit = |devices: &[Device], batch_size: usize, valid: &ImageDataset| {
        fit_data_parallel(
            small_qat_mobilenet_v2(&device),
            &train,
            valid,
            &data.transform,
            devices,
            &DataParallelConfig::new().with_batch_size(batch_size),
            dir.path(),
        )
        .map(|_| ())
    };
    let valid = subset(&data.test, 0..2);
    let empty = subset(&data.test, 0..0);
    for (what, result) in [
        ("no device", fit(&[], 2, &valid)),
        ("batch size 0", fit(&two_cpu_devices(), 0, &valid)),
        ("empty test split", fit(&two_cpu_devices(), 2, &empty)),
    ] {
        let err = result.expect_err(what).to_string();
        assert!(err.contains("data-parallel"), "{what}: {err}");
    }
}

/// `fit_data_parallel` takes any quantizable image classifier: a tiny CNN on one device, one
/// batch, takes the step plain SGD takes on that batch (observers and batch norm frozen, so
/// that the step is a function of the weights alone).
#[test]
fn a_model_of_your_own_trains_data_parallel() {
    use crate::common::classifier::TinyClassifier;
    use burn_qat::finetune::{FinetuneConfig, prepare_model_qat};
    use burn_qat::nn::ImageClassifier;

    let device = Device::flex().autodiff();
    let data = FinetuneData::embedded_mnist().unwrap();
    let train = subset(&data.train, 0..BATCH);
    let valid = subset(&data.test, 0..2);
    let mut model = TinyClassifier::new(&device);
    prepare_model_qat(&mut model, &FinetuneConfig::new(), &device).unwrap();
    let _ = ImageClassifier::forward(&model, batch(&data, &train, &device).0);
    disable_observer(&mut model);
    freeze_bn_stats(&mut model);
    let lr = 0.05;

    let mut single = model.valid().train().fork(&device);
    let (x, y) = batch(&data, &train, &device);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(ImageClassifier::forward(&single, x), y);
    let grads = GradientsParams::from_grads(loss.backward(), &single);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    single = optim.step(lr, single, grads);

    let dir = tempfile::tempdir().unwrap();
    let config = DataParallelConfig::new()
        .with_lr(lr)
        .with_batch_size(BATCH)
        .with_shuffle(false);
    let trained = fit_data_parallel(
        model.valid().train().fork(&device),
        &train,
        &valid,
        &data.transform,
        &[Device::flex()],
        &config,
        dir.path(),
    )
    .unwrap();

    let (before, want, got) = (params(&model), params(&single), params(&trained));
    assert_eq!(want.len(), got.len());
    let changed = before.iter().zip(&want).filter(|(b, w)| b != w).count();
    assert!(changed > 50, "the step changed only {changed} values");
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(
            w == g || (w - g).abs() <= 1e-5 + 1e-4 * w.abs(),
            "parameter value {i}: fit_data_parallel gives {g}, one SGD step {w}"
        );
    }
}
