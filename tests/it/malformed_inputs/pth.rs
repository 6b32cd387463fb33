//! PyTorch checkpoints: the float loader (`models::load_mobilenet_v2`, burn-store underneath)
//! and the quantized state-dict reader (`io::read_quantized_state_dict`).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_qat::bench::{BenchOptions, bench_model};
use burn_qat::infer::{WeightsKind, infer_npy, load_weights, predict};
use burn_qat::int8::Engine;
use burn_qat::io::{StateValue, npy, read_quantized_state_dict};
use burn_qat::models::{MobileNetV2Config, load_mobilenet_v2};

use super::{expect_err, expect_err_at, temp_file};
use crate::common::fixture_path;
use crate::torch_save::{Storage, pk, tensors_checkpoint, zip_checkpoint, zip_entries, zip_of};

/// One 32×32 pass and no warm-up: `bench` only has to run on the loaded model.
fn one_small_pass() -> BenchOptions {
    BenchOptions {
        batch: 1,
        input_size: 32,
        threads: None,
        warmup: 0,
        iters: 1,
    }
}

fn config(width_mult: f64) -> MobileNetV2Config {
    MobileNetV2Config::new()
        .with_width_mult(width_mult)
        .with_num_classes(10)
}

/// Loads `bytes` as a float MobileNetV2 (width 0.25) checkpoint and expects an error.
#[track_caller]
fn float_err(bytes: &[u8], needles: &[&str]) {
    let (_dir, path) = temp_file("model.pth", bytes);
    let result = load_mobilenet_v2(&path, &config(0.25), &Device::flex());
    expect_err_at(result.map(|_| ()), &path, needles);
}

/// Reads `bytes` as a quantized state dict and expects an error.
#[track_caller]
fn quantized_err(bytes: &[u8], needles: &[&str]) {
    let (_dir, path) = temp_file("model.pth", bytes);
    expect_err_at(read_quantized_state_dict(&path), &path, needles);
}

/// A one-tensor float state dict (`features.0.0.weight`, 4 floats).
fn one_tensor(ty: &str, numel: i64, size: &[i64], data: &[u8]) -> Vec<u8> {
    let pkl = pk::ordered_state_dict(&[("features.0.0.weight", pk::tensor(ty, "0", numel, size))]);
    zip_checkpoint(&pkl, &[("0", data)])
}

#[test]
fn float_pth_empty_file() {
    float_err(b"", &["the file is empty"]);
}

#[test]
fn float_pth_directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let result = load_mobilenet_v2(dir.path(), &config(0.25), &Device::flex());
    expect_err_at(result.map(|_| ()), dir.path(), &["is a directory"]);
}

#[test]
fn float_pth_truncated_legacy_and_zip() {
    for name in ["mobilenet_v2_w025.pth", "qat_mobilenet_v2_float.pth"] {
        let bytes = std::fs::read(fixture_path(name)).unwrap();
        for cut in [7, 100, bytes.len() / 2, bytes.len() - 3] {
            float_err(&bytes[..cut], &["not a readable PyTorch checkpoint"]);
        }
    }
    let zip = one_tensor("FloatStorage", 4, &[4], &[0; 16]);
    for cut in [4, 30, zip.len() / 2, zip.len() - 1] {
        float_err(&zip[..cut], &["not a readable PyTorch checkpoint"]);
    }
}

#[test]
fn float_pth_corrupted_storage_bytes_fail_the_crc() {
    let mut zip = one_tensor("FloatStorage", 4, &[4], &[7; 16]);
    let at = zip.windows(16).position(|w| w == [7; 16]).unwrap();
    zip[at + 3] ^= 0x5a;
    float_err(&zip, &["archive/data/0"]);
}

#[test]
fn float_pth_garbage_bytes() {
    float_err(
        b"<html>404 not found</html>",
        &["neither a zip archive nor a pickle"],
    );
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    float_err(
        &[b"PK\x03\x04".as_slice(), &noise].concat(),
        &["not a readable zip archive"],
    );
}

#[test]
fn float_pth_wrong_shape_names_the_key() {
    let path = fixture_path("mobilenet_v2_w025.pth");
    let result = load_mobilenet_v2(&path, &config(0.5), &Device::flex());
    expect_err(
        result.map(|_| ()),
        &[
            "'features.0.0.weight' has shape [8, 3, 3, 3]",
            "expects [16, 3, 3, 3]",
        ],
    );
}

#[test]
fn float_pth_quantized_checkpoint_is_the_wrong_dtype() {
    let path = fixture_path("int8_models/mobilenet_v2_qnnpack_w025.pth");
    let result = load_mobilenet_v2(&path, &config(0.25), &Device::flex());
    expect_err(result.map(|_| ()), &["quantized"]);
}

#[test]
fn float_pth_unsupported_storage_dtype() {
    float_err(
        &one_tensor("ComplexFloatStorage", 4, &[4], &[0; 32]),
        &["unsupported storage type torch.ComplexFloatStorage"],
    );
}

#[test]
fn float_pth_huge_declared_storage() {
    // A storage that claims 2^40 floats next to 16 bytes of data.
    float_err(
        &one_tensor("FloatStorage", 1 << 40, &[1 << 40], &[0; 16]),
        &["holds 16 bytes, but 4398046511104 are declared"],
    );
}

#[test]
fn float_pth_huge_declared_shape() {
    float_err(
        &one_tensor("FloatStorage", 4, &[1 << 20, 1 << 20], &[0; 16]),
        &["reaches past"],
    );
}

#[test]
fn float_pth_deeply_nested_pickle() {
    let tuples = [vec![0x80, 2, b'N'], vec![0x85; 100_000], vec![b'.']].concat();
    float_err(&zip_checkpoint(&tuples, &[]), &["nested deeper"]);
    let marks = [vec![0x80, 2], vec![b'('; 100_000]].concat();
    float_err(&zip_checkpoint(&marks, &[]), &["MARKs nested"]);
}

#[test]
fn float_pth_self_referencing_value() {
    // A list that holds itself, as a state-dict value: a cycle, not infinite recursion.
    let cycle = pk::ordered_state_dict(&[("x", vec![b']', b'q', 9, b'h', 9, b'a'])]);
    float_err(&zip_checkpoint(&cycle, &[]), &["nested deeper"]);
}

#[test]
fn float_pth_code_execution_global() {
    let call = [
        pk::global("os", "system"),
        vec![b'('],
        pk::s("echo pwned"),
        vec![b't', b'R'],
    ]
    .concat();
    float_err(
        &zip_checkpoint(&pk::ordered_state_dict(&[("x", call)]), &[]),
        &["unsupported call os.system"],
    );
}

#[test]
fn float_pth_legacy_storage_count_past_the_end() {
    let bytes = std::fs::read(fixture_path("int8_models/misc_dtypes.legacy.pth")).unwrap();
    // The storage-key list (`... e.`) ends the pickles; the first storage's count follows.
    let keys_end = bytes.windows(2).rposition(|w| w == b"e.").unwrap() + 2;
    let mut bad = bytes[..keys_end].to_vec();
    bad.extend((1i64 << 62).to_le_bytes());
    bad.extend(&bytes[keys_end + 8..]);
    float_err(
        &bad,
        &["declares 4611686018427387904 elements", "more than the"],
    );
}

#[test]
fn quantized_pth_directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    expect_err_at(
        read_quantized_state_dict(dir.path()),
        dir.path(),
        &["is a directory"],
    );
}

#[test]
fn quantized_pth_truncated_zip() {
    let bytes = std::fs::read(fixture_path("int8_models/mobilenet_v2_qnnpack_w025.pth")).unwrap();
    for cut in [3, 64, bytes.len() / 3, bytes.len() - 22] {
        quantized_err(&bytes[..cut], &["not a readable PyTorch checkpoint"]);
    }
}

#[test]
fn quantized_pth_huge_declared_storage() {
    quantized_err(
        &one_tensor("FloatStorage", 1 << 50, &[4], &[0; 16]),
        &["holds 16 bytes, but 4503599627370496 are declared"],
    );
}

#[test]
fn quantized_pth_pickle_memo_dag_blow_up() {
    // (x, x) fifty levels deep: a tiny pickle with 2^50 leaves.
    let mut dag = vec![b'N'];
    for _ in 0..50 {
        dag.extend([b'2', 0x86]);
    }
    quantized_err(
        &zip_checkpoint(&pk::ordered_state_dict(&[("x", dag)]), &[]),
        &["blow-up"],
    );
}

#[test]
fn missing_checkpoint_is_an_io_error() {
    let path = Path::new("/nonexistent/dir/model.pth");
    let result = load_mobilenet_v2(path, &config(0.25), &Device::flex());
    expect_err_at(result.map(|_| ()), path, &["No such file"]);
}

// ------------------------------------------------------------------------------------------
// Float checkpoints in other dtypes: float16, bfloat16, float64, mixed, and integer or bool
// tensors in float slots. PyTorch's `load_state_dict` copies each into the float32 parameter
// (`param.copy_(value)`, which converts), so every one must load, run, and give the logits of
// the float32 checkpoint holding the same values as the parameters hold them.

/// The float MobileNetV2 fixture (width 0.25, 10 classes): `(key, shape, values)` in file
/// order, `num_batches_tracked` (int64) included.
fn mobilenet_tensors() -> Vec<(String, Vec<usize>, Vec<f64>)> {
    read_quantized_state_dict(&fixture_path("mobilenet_v2_w025.pth"))
        .unwrap()
        .into_iter()
        .map(|(key, value)| match value {
            StateValue::Float { shape, data } => {
                (key, shape, data.into_iter().map(f64::from).collect())
            }
            StateValue::Int { shape, data } => {
                (key, shape, data.into_iter().map(|x| x as f64).collect())
            }
            other => panic!("{key}: unexpected {}", other.kind()),
        })
        .collect()
}

/// Writes the MobileNetV2 fixture with tensor `i` (key `k`) stored as `pick(i, k)` (its values
/// `nudge`d first), and the float32 checkpoint of the same values as they load; returns the
/// two paths. `num_batches_tracked` stays int64, as PyTorch keeps it.
fn dtype_pair(
    dir: &Path,
    name: &str,
    pick: impl Fn(usize, &str) -> Storage,
    nudge: impl Fn(Storage, f64) -> f64,
) -> (PathBuf, PathBuf) {
    let tensors = mobilenet_tensors();
    let mut stored = Vec::new();
    let mut reference = Vec::new();
    for (i, (key, shape, values)) in tensors.iter().enumerate() {
        if key.ends_with("num_batches_tracked") {
            stored.push((key, Storage::Long, shape, values.clone()));
            reference.push((key, Storage::Long, shape, values.clone()));
            continue;
        }
        let storage = pick(i, key);
        let values: Vec<f64> = values.iter().map(|&v| nudge(storage, v)).collect();
        let widened = values
            .iter()
            .map(|&v| f64::from(storage.as_f32(v)))
            .collect();
        stored.push((key, storage, shape, values));
        reference.push((key, Storage::Float, shape, widened));
    }
    let write = |file: &str, entries: &[(&String, Storage, &Vec<usize>, Vec<f64>)]| {
        let entries: Vec<(&str, Storage, &[usize], &[f64])> = entries
            .iter()
            .map(|(k, s, shape, v)| (k.as_str(), *s, shape.as_slice(), v.as_slice()))
            .collect();
        let path = dir.join(file);
        std::fs::write(&path, tensors_checkpoint(&entries)).unwrap();
        path
    };
    (
        write(&format!("{name}.pth"), &stored),
        write(&format!("{name}.f32.pth"), &reference),
    )
}

/// Logits of `weights` on a fixed batch of two 32×32 images through `burn-qat infer`'s library
/// path (`infer_npy`: `.npy` in, `.npy` out).
fn infer_logits(weights: &Path) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let x = burn_qat::bench::bench_input(2, 32);
    npy::write_f32(&input, &x, &[2, 3, 32, 32]).unwrap();
    let shape = infer_npy(
        weights,
        &config(0.25),
        WeightsKind::Float,
        &input,
        &output,
        &Device::flex(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shape, [2, 10]);
    npy::read_f32(&output).unwrap().data
}

/// Loads `weights` as `infer` and `bench` do and checks the logits against `reference`'s, both
/// through `infer_npy` and through `load_weights` + `predict`; then runs `bench` on it.
#[track_caller]
fn assert_same_logits(weights: &Path, reference: &Path) {
    let want = infer_logits(reference);
    assert!(want.iter().all(|v| v.is_finite()));
    let got = infer_logits(weights);
    assert_eq!(got, want, "{}: logits differ", weights.display());

    let device = Device::flex();
    let model = load_weights(weights, &config(0.25), WeightsKind::Float, &device).unwrap();
    let x = burn_qat::bench::bench_input(2, 32);
    let logits = predict(&model, &x, &[2, 3, 32, 32], false, &device).unwrap();
    assert_eq!(
        logits,
        want,
        "{}: load_weights logits differ",
        weights.display()
    );

    let options = one_small_pass();
    bench_model(weights, &config(0.25), WeightsKind::Float, options, &device)
        .unwrap_or_else(|e| panic!("bench: {e}"));
}

#[test]
fn float_pth_float16_loads_as_float32() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reference) = dtype_pair(dir.path(), "half", |_, _| Storage::Half, |_, v| v);
    assert_same_logits(&path, &reference);
}

#[test]
fn float_pth_bfloat16_loads_as_float32() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reference) = dtype_pair(dir.path(), "bf16", |_, _| Storage::BFloat16, |_, v| v);
    assert_same_logits(&path, &reference);
}

#[test]
fn float_pth_float64_loads_as_float32() {
    // Values off the float32 grid (by 2^-40 relative), so that loading rounds them.
    let dir = tempfile::tempdir().unwrap();
    let (path, reference) = dtype_pair(
        dir.path(),
        "double",
        |_, _| Storage::Double,
        |_, v| v * (1.0 + 2f64.powi(-40)) + 1e-30,
    );
    assert_same_logits(&path, &reference);
}

#[test]
fn float_pth_mixed_dtypes_load_as_float32() {
    // Every float dtype in every kind of layer (conv, batch norm, linear), tensor by tensor.
    let dir = tempfile::tempdir().unwrap();
    let order = [
        Storage::Half,
        Storage::Float,
        Storage::BFloat16,
        Storage::Double,
    ];
    let (path, reference) = dtype_pair(dir.path(), "mixed", |i, _| order[i % 4], |_, v| v);
    assert_same_logits(&path, &reference);
}

#[test]
fn float_pth_integer_and_bool_tensors_in_float_slots_load_as_float32() {
    // PyTorch's `param.copy_(value)` converts integer and bool tensors too: batch-norm
    // statistics stored as int64 / int32 (rounded values) and a bias stored as bool load as
    // the float32 values they hold.
    let dir = tempfile::tempdir().unwrap();
    let pick = |_: usize, key: &str| {
        if key.ends_with("running_mean") {
            Storage::Long
        } else if key.ends_with("running_var") {
            Storage::Int
        } else if key == "classifier.1.bias" {
            Storage::Bool
        } else {
            Storage::Float
        }
    };
    // Whole numbers for the integer slots (variances at least 1), the fixture's values elsewhere.
    let nudge = |storage: Storage, v: f64| match storage {
        Storage::Long => v.round(),
        Storage::Int => v.round().max(1.0),
        _ => v,
    };
    let (path, reference) = dtype_pair(dir.path(), "ints", pick, nudge);
    assert_same_logits(&path, &reference);
}

// ------------------------------------------------------------------------------------------
// torchvision int8 checkpoints whose residual add qnnpack cannot run.

#[test]
fn quantized_pth_qnnpack_add_scale_ratio_names_file_and_key() {
    // torchvision's qnnpack MobileNetV2 (width 0.25) with the output scale of the first
    // residual add (`features.3`) made 1024 times smaller: its input/output scale ratios pass
    // qnnpack's limit of 2^8.
    let fixture = fixture_path("int8_models/mobilenet_v2_qnnpack_w025.pth");
    let key = "features.3.skip_add.scale";
    let scale = match &read_quantized_state_dict(&fixture).unwrap()[key] {
        StateValue::Float { data, .. } if data.len() == 1 => data[0],
        other => panic!("{key}: {other:?}"),
    };
    let mut entries = zip_entries(&std::fs::read(&fixture).unwrap());
    let storages: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].0.contains("/data/") && entries[i].1 == scale.to_le_bytes())
        .collect();
    assert_eq!(storages.len(), 1, "the storage of {key} is not unique");
    entries[storages[0]].1 = (scale / 1024.0).to_le_bytes().to_vec();
    let (dir, path) = temp_file("bad_add.pth", &zip_of(&entries));
    let (input, output) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    npy::write_f32(
        &input,
        &burn_qat::bench::bench_input(1, 32),
        &[1, 3, 32, 32],
    )
    .unwrap();
    let run = |engine| {
        let kind = WeightsKind::Int8(engine);
        infer_npy(&path, &config(0.25), kind, &input, &output, &Device::flex())
    };

    // `burn-qat infer --quantized --engine qnnpack`: one line, naming the file and the key.
    let msg = expect_err(run(Engine::Qnnpack), &[key, "qnnpack add", "scale ratio"]);
    assert!(msg.contains(&path.display().to_string()), "no file: {msg}");
    assert_eq!(msg.matches("quantization error").count(), 1, "{msg}");
    assert!(!output.exists(), "no output on error");
    // `burn-qat bench` loads it the same way.
    let options = one_small_pass();
    let bench = bench_model(
        &path,
        &config(0.25),
        WeightsKind::Int8(Engine::Qnnpack),
        options,
        &Device::flex(),
    );
    expect_err(bench.map(|_| ()), &[key, "qnnpack add"]);

    // x86's add has no such limit: the same file runs.
    assert_eq!(run(Engine::X86).unwrap(), [1, 10]);
}
