//! PyTorch checkpoints: the float loader (`models::load_mobilenet_v2`, burn-store underneath)
//! and the quantized state-dict reader (`io::read_quantized_state_dict`).

use std::path::Path;

use burn::tensor::Device;
use burn_qat::io::read_quantized_state_dict;
use burn_qat::models::{MobileNetV2Config, load_mobilenet_v2};

use super::{expect_err, expect_err_at, temp_file};
use crate::common::fixture_path;
use crate::torch_save::{pk, zip_checkpoint};

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
