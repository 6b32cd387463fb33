//! The main job, shortened: the same pipeline as `examples/qat_finetune.rs` (shipped float
//! weights, PTQ baseline, QAT with the observer/BN schedule, convert, int8 evaluation,
//! checkpoints and resume) on a few batches of the embedded digits.

use std::path::PathBuf;

use crate::common::recipes::short_recipe;
use burn::tensor::Device;
use burn_qat::finetune::{FinetuneConfig, FinetuneData, accuracy, qat_model, run};
use burn_qat::models::MobileNetV2;
use burn_qat::nn::ImageClassifier;
use burn_qat::quantize::for_each_fake_quant;

fn data() -> FinetuneData {
    FinetuneData::embedded_mnist().unwrap()
}

fn row_names(rows: &[burn_qat::finetune::Row]) -> Vec<&str> {
    rows.iter().map(|r| r.name.as_str()).collect()
}

fn weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/mobilenet_v2_mnist_float.bpk")
}

#[test]
fn shortened_qat_finetune_runs_end_to_end_and_resumes() {
    let out = tempfile::tempdir().unwrap();
    let config = FinetuneConfig::new()
        .with_epochs(2)
        .with_batch_size(16)
        .with_max_batches(Some(2))
        .with_calibration_batches(2)
        .with_observer_off_epoch(1)
        .with_bn_freeze_epoch(1)
        .with_latency_images(2);
    let data = data();
    let device = Device::flex().autodiff();
    let rows = run(&config, &data, Some(&weights()), out.path(), false, &device).unwrap();
    assert_eq!(
        row_names(&rows),
        [
            "float",
            "PTQ int8 (x86)",
            "QAT fake-quant",
            "QAT int8 (x86)"
        ]
    );
    // The shipped float model is good on the first 200 test digits; int8 models are smaller.
    assert!(rows[0].accuracy >= 0.95, "{rows:?}");
    for r in &rows[1..] {
        assert!(r.accuracy >= 0.9, "{rows:?}");
    }
    assert!(rows[3].size_bytes * 3 < rows[0].size_bytes, "{rows:?}");
    assert!(out.path().join("qat_epoch1.bpk").is_file());
    assert!(
        out.path()
            .join("mobilenet_v2_qat.int8.safetensors")
            .is_file()
    );

    // Interrupted after epoch 0: resuming trains epoch 1 only and ends in the same place.
    std::fs::remove_file(out.path().join("qat_epoch1.bpk")).unwrap();
    let resumed = run(&config, &data, Some(&weights()), out.path(), true, &device).unwrap();
    assert!(out.path().join("qat_epoch1.bpk").is_file());
    assert_eq!(resumed.len(), 4);
}

#[test]
fn missing_weights_are_a_clear_error() {
    let out = tempfile::tempdir().unwrap();
    let config = FinetuneConfig::new().with_max_batches(Some(1));
    let err = run(
        &config,
        &data(),
        Some(&PathBuf::from("no/such/weights.bpk")),
        out.path(),
        false,
        &Device::flex().autodiff(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no/such/weights.bpk"), "{err}");
}

/// Evaluation never observes: a QAT model's recorded ranges are the same after an accuracy run
/// on test images (they were updated, and `convert` then baked the test images' ranges in).
#[test]
fn evaluation_never_observes() {
    type Ranges = Vec<(Vec<f32>, Vec<f32>)>;
    fn ranges(model: &mut MobileNetV2) -> Ranges {
        let mut all = Vec::new();
        for_each_fake_quant(model, |fq| all.push(fq.activation_post_process.min_max()));
        all
    }
    let config = FinetuneConfig::new().with_width_mult(0.25);
    let device = Device::flex();
    let mut model = qat_model(&config, 10, None, &device).unwrap();
    let data = data();
    let test = data.test.select(&(0..4).collect::<Vec<_>>());
    let before = ranges(&mut model);
    accuracy(&model, &test, &data.transform, false, None, &device).unwrap();
    assert!(ranges(&mut model) == before, "evaluation moved the ranges");
    // The same images through a plain forward do move them: the check above can fail.
    let images: Vec<_> = test.images.iter().collect();
    let _ = model.forward(data.transform.batch(&images, &device).unwrap());
    assert!(ranges(&mut model) != before);
}

/// The loop, its checkpoints and `resume` take any quantizable image classifier: a tiny CNN
/// goes through `run_with` (PTQ baseline, QAT, convert), and a run resumed after epoch 0 loads
/// that checkpoint (its file is not rewritten) and ends with the uninterrupted run's int8
/// model, byte for byte.
#[test]
fn a_model_of_your_own_trains_checkpoints_and_resumes() {
    use crate::common::classifier::TinyClassifier;
    use burn_qat::finetune::{FloatModel, run_with};
    use std::os::unix::fs::MetadataExt;

    let out = tempfile::tempdir().unwrap();
    let config = short_recipe().with_lr(0.05);
    let data = data();
    let device = Device::flex().autodiff();
    let build = |device: &Device| Ok(TinyClassifier::new(device));
    let model = FloatModel {
        name: "tiny",
        build: &build,
    };
    let rows = run_with(&config, &data, &model, out.path(), false, &device).unwrap();
    assert_eq!(
        row_names(&rows),
        [
            "float",
            "PTQ int8 (x86)",
            "QAT fake-quant",
            "QAT int8 (x86)"
        ]
    );
    for file in [
        "tiny_ptq.int8.safetensors",
        "qat_epoch0.bpk",
        "qat_epoch1.bpk",
    ] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    let int8 = out.path().join("tiny_qat.int8.safetensors");
    let uninterrupted = std::fs::read(&int8).unwrap();
    let epoch0 = out.path().join("qat_epoch0.bpk");
    let epoch0_inode = std::fs::metadata(&epoch0).unwrap().ino();

    // Interrupted after epoch 0.
    std::fs::remove_file(out.path().join("qat_epoch1.bpk")).unwrap();
    std::fs::remove_file(&int8).unwrap();
    let resumed = run_with(&config, &data, &model, out.path(), true, &device).unwrap();
    assert_eq!(resumed.len(), 4);
    // Epoch 0 was loaded, not trained again (an atomic rewrite would be a new file).
    assert_eq!(std::fs::metadata(&epoch0).unwrap().ino(), epoch0_inode);
    assert!(out.path().join("qat_epoch1.bpk").is_file());
    assert!(
        std::fs::read(&int8).unwrap() == uninterrupted,
        "the resumed run's int8 model differs from the uninterrupted run's"
    );

    // A checkpoint of another model is refused, naming the file.
    std::fs::remove_file(out.path().join("qat_epoch1.bpk")).unwrap();
    let other = |device: &Device| {
        let mut m = TinyClassifier::new(device);
        m.fc = burn_qat::nn::LinearBnActConfig::new(8, 3).init(device);
        Ok(m)
    };
    let other = FloatModel {
        name: "tiny",
        build: &other,
    };
    let err = run_with(&config, &data, &other, out.path(), true, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("qat_epoch0.bpk"), "{err}");
}

/// `--weight-bits 4 --lsq`: the rows say so, LSQ learns from `lsq_learn_epoch` on (the epoch-0
/// checkpoint estimates, the epoch-1 one learns), and both int8 models hold 4-bit weights.
#[test]
fn low_bit_lsq_run_learns_on_schedule_and_writes_4_bit_weights() {
    use crate::common::classifier::TinyClassifier;
    use burn::module::Module;
    use burn_qat::finetune::{FloatModel, prepare_model_qat, run_with};
    use burn_qat::io::read_int8_file;
    use burn_qat::state::StateValue;
    use burn_store::{BurnpackStore, ModuleSnapshot};

    let out = tempfile::tempdir().unwrap();
    let config = short_recipe()
        .with_lr(0.05)
        .with_weight_bits(4)
        .with_lsq(true)
        .with_lsq_learn_epoch(1);
    let data = data();
    let device = Device::flex().autodiff();
    let build = |device: &Device| Ok(TinyClassifier::new(device));
    let model = FloatModel {
        name: "tiny",
        build: &build,
    };
    let rows = run_with(&config, &data, &model, out.path(), false, &device).unwrap();
    assert_eq!(
        row_names(&rows),
        [
            "float",
            "PTQ int8 (x86, 4-bit weights)",
            "QAT LSQ fake-quant (4-bit weights)",
            "QAT LSQ int8 (x86, 4-bit weights)"
        ]
    );

    let learning = |epoch: usize| -> Vec<bool> {
        let mut m = TinyClassifier::new(&device);
        prepare_model_qat(&mut m, &config, &device).unwrap();
        let path = out.path().join(format!("qat_epoch{epoch}.bpk"));
        m.load_from(&mut BurnpackStore::from_file(&path)).unwrap();
        let mut on = Vec::new();
        burn_qat::quantize::for_each_fake_quant(&mut m, |fq| {
            on.push(fq.learnable.as_ref().unwrap().learning_enabled());
        });
        let _ = m.valid();
        on
    };
    let (before, after) = (learning(0), learning(1));
    assert!(
        !before.is_empty() && before.iter().all(|&l| !l),
        "{before:?}"
    );
    assert!(after.iter().all(|&l| l), "{after:?}");

    for file in ["tiny_ptq.int8.safetensors", "tiny_qat.int8.safetensors"] {
        let (state, _) = read_int8_file(&out.path().join(file)).unwrap();
        let mut weights = 0;
        for (name, value) in &state {
            if let StateValue::QInt8 { data, .. } = value {
                weights += 1;
                let (lo, hi) = (data.iter().min().unwrap(), data.iter().max().unwrap());
                assert!(*lo >= -8 && *hi <= 7, "{file}: {name} spans [{lo}, {hi}]");
            }
        }
        assert!(weights >= 2, "{file}: {weights} int8 weights");
    }
}
