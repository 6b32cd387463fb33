//! Reproducibility: the same seed gives bit-identical QAT results on the same machine.

use std::path::PathBuf;

use burn::tensor::Device;
use burn_qat::finetune::{FinetuneConfig, FinetuneData, run};

/// Set in the child process that runs [`same_seed_same_int8_model`]'s two runs.
const CHILD_ENV: &str = "BURN_QAT_TEST_REPRODUCIBILITY_CHILD";

/// Two seeded runs in one process end in the same int8 model files, byte for byte (the same
/// SHA-256), and so in the same int8 weights, biases, scales and zero-points. (Alone in a
/// process: dropout draws from the backend's generator, which a test running beside it would
/// draw from too, so the test runs its body in a child process of the test binary that runs
/// this test only.)
#[test]
fn same_seed_same_int8_model() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return crate::run_alone(module_path!(), "same_seed_same_int8_model", CHILD_ENV);
    }
    let config = FinetuneConfig::new()
        .with_epochs(1)
        .with_batch_size(16)
        .with_max_batches(Some(2))
        .with_calibration_batches(1)
        .with_latency_images(1);
    let data = FinetuneData::embedded_mnist().unwrap();
    let weights =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/mobilenet_v2_mnist_float.bpk");
    let files = [
        "mobilenet_v2_qat.int8.safetensors",
        "mobilenet_v2_ptq.int8.safetensors",
    ];
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let out = tempfile::tempdir().unwrap();
            let device = Device::flex().autodiff();
            run(&config, &data, Some(&weights), out.path(), false, &device).unwrap();
            let bytes: Vec<Vec<u8>> = files
                .iter()
                .map(|f| std::fs::read(out.path().join(f)).unwrap())
                .collect();
            let path = out.path().join(files[0]);
            (bytes, burn_qat::io::read_int8_file(&path).unwrap().0)
        })
        .collect();
    assert!(runs[0].1 == runs[1].1, "two runs with one seed differ");
    for (i, file) in files.iter().enumerate() {
        assert!(
            runs[0].0[i] == runs[1].0[i],
            "two runs with one seed wrote different bytes to {file}"
        );
    }
}
