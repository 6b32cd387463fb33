//! The crate's own int8 model format (`io::read_int8_file`, a safetensors file with the
//! `format = burn-qat-int8` metadata).

use std::collections::HashMap;

use burn_qat::io::{INT8_FORMAT, QScheme, StateValue, read_int8_file, save_int8_file};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{expect_err_at, temp_file};

/// A tensor for [`st`]: name, dtype, shape, bytes.
type Raw<'a> = (&'a str, Dtype, Vec<usize>, Vec<u8>);

/// A safetensors file of `tensors` with `metadata`.
fn st(tensors: &[Raw<'_>], metadata: &[(&str, &str)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

const META: [(&str, &str); 3] = [("format", INT8_FORMAT), ("version", "1"), ("engine", "x86")];

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A 2x2 per-channel qint8 weight `w` with scales `scales` along `axis`.
fn per_channel(scales: &[f32], axis: i64) -> Vec<u8> {
    let n = scales.len();
    st(
        &[
            ("w", Dtype::I8, vec![2, 2], vec![1, 2, 3, 4]),
            ("w:scale", Dtype::F32, vec![n], f32s(scales)),
            ("w:zero_point", Dtype::I8, vec![n], vec![0; n]),
            ("w:axis", Dtype::I64, vec![1], axis.to_le_bytes().to_vec()),
        ],
        &META,
    )
}

#[track_caller]
fn int8_err(bytes: &[u8], needles: &[&str]) {
    let (_dir, path) = temp_file("model.int8.safetensors", bytes);
    expect_err_at(read_int8_file(&path), &path, needles);
}

/// A real file from `save_int8_file`: a per-channel weight, a float bias, an int buffer.
fn saved() -> Vec<u8> {
    let mut state = burn_qat::io::StateDict::new();
    state.insert(
        "conv.weight".into(),
        StateValue::QInt8 {
            shape: vec![2, 1, 2, 2],
            data: (0..8).collect(),
            qscheme: QScheme::PerChannelAffine {
                scales: vec![0.5, 0.25],
                zero_points: vec![0, 1],
                axis: 0,
            },
        },
    );
    state.insert(
        "conv.bias".into(),
        StateValue::Float {
            shape: vec![2],
            data: vec![1.0, -1.0],
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.int8.safetensors");
    save_int8_file(&path, &state, "x86", &Default::default()).unwrap();
    let (back, _) = read_int8_file(&path).unwrap();
    assert_eq!(back, state);
    std::fs::read(&path).unwrap()
}

#[test]
fn int8_empty_file() {
    int8_err(b"", &["not a safetensors file", "header too small"]);
}

#[test]
fn int8_directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    expect_err_at(read_int8_file(dir.path()), dir.path(), &["is a directory"]);
}

#[test]
fn int8_truncated_file() {
    let bytes = saved();
    for cut in [4, 8, 9, 50, bytes.len() / 2, bytes.len() - 1] {
        int8_err(&bytes[..cut], &["not a safetensors file"]);
    }
}

#[test]
fn int8_huge_declared_header() {
    let mut bytes = (1u64 << 62).to_le_bytes().to_vec();
    bytes.extend(b"{}");
    int8_err(&bytes, &["not a safetensors file", "header too large"]);
    // Within the format's 100 MB limit but longer than the file.
    let mut bytes = 50_000_000u64.to_le_bytes().to_vec();
    bytes.extend(b"{}");
    int8_err(&bytes, &["not a safetensors file", "invalid header length"]);
}

#[test]
fn int8_corrupted_header_json() {
    let mut bytes = saved();
    bytes[8] = b'[';
    int8_err(&bytes, &["not a safetensors file"]);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut bytes = (deep.len() as u64).to_le_bytes().to_vec();
    bytes.extend(deep.as_bytes());
    int8_err(&bytes, &["not a safetensors file"]);
}

#[test]
fn int8_tensor_offsets_outside_the_data() {
    let header = r#"{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0; 16]);
    int8_err(&bytes, &["not a safetensors file"]);
}

#[test]
fn int8_not_this_format() {
    let plain = st(&[("w", Dtype::F32, vec![1], f32s(&[1.0]))], &[]);
    int8_err(&plain, &["not a burn-qat int8 model"]);
    let future = st(
        &[("w", Dtype::F32, vec![1], f32s(&[1.0]))],
        &[("format", INT8_FORMAT), ("version", "7")],
    );
    int8_err(&future, &["int8 format version Some(\"7\")"]);
}

#[test]
fn int8_wrong_dtype() {
    let half = st(&[("w", Dtype::F16, vec![2], vec![0; 4])], &META);
    int8_err(&half, &["`w`: unexpected dtype F16"]);
    let scale_i64 = st(
        &[
            ("w", Dtype::I8, vec![2], vec![1, 2]),
            ("w:scale", Dtype::I64, vec![1], 1i64.to_le_bytes().to_vec()),
            ("w:zero_point", Dtype::I8, vec![1], vec![0]),
        ],
        &META,
    );
    int8_err(&scale_i64, &["needs an f32 `:scale`"]);
}

#[test]
fn int8_missing_quantization() {
    let bare = st(&[("w", Dtype::I8, vec![2], vec![1, 2])], &META);
    int8_err(
        &bare,
        &["`w`: an int8 tensor needs an f32 `:scale` beside it"],
    );
}

#[test]
fn int8_wrong_shape_of_quantization() {
    let mismatch = st(
        &[
            ("w", Dtype::I8, vec![2], vec![1, 2]),
            ("w:scale", Dtype::F32, vec![2], f32s(&[0.5, 0.5])),
            ("w:zero_point", Dtype::I8, vec![1], vec![0]),
        ],
        &META,
    );
    int8_err(&mismatch, &["differ in length"]);
    int8_err(
        &per_channel(&[0.5, 0.5, 0.5], 0),
        &["3 per-channel scales for 2 channels along axis 0"],
    );
    int8_err(
        &per_channel(&[0.5, 0.5], 2),
        &["inconsistent per-channel quantization"],
    );
    int8_err(
        &per_channel(&[0.5, 0.5], -1),
        &["inconsistent per-channel quantization"],
    );
}

#[test]
fn int8_non_finite_or_zero_scale() {
    for bad in [f32::NAN, f32::INFINITY, 0.0, -1.0] {
        int8_err(
            &per_channel(&[0.5, bad], 0),
            &["is not a positive finite number"],
        );
    }
}
