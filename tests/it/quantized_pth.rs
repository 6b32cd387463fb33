//! The quantized state-dict reader against PyTorch: every key of the converted MobileNetV2
//! checkpoints (qnnpack per-tensor, x86 per-channel; zip and legacy format) and of a small
//! every-dtype state dict, as `scripts/gen_int8_model_fixtures.py` describes them in
//! `tests/fixtures/int8_models/manifest.json`; and malformed files, which must give
//! `Error::Checkpoint` and never panic.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::PathBuf;

use crate::torch_save::{pk, zip_checkpoint, zip_entries};
use burn_qat::Error;
use burn_qat::io::{QScheme, StateValue, read_quantized_state_dict};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    crate::common::fixture_path("int8_models")
}

fn manifest() -> Value {
    let path = dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

fn read(name: &str) -> BTreeMap<String, StateValue> {
    read_quantized_state_dict(&dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// First 16 hex digits of the SHA-256 of little-endian bytes (the manifest's `digest`).
fn digest(bytes: impl IntoIterator<Item = u8>) -> String {
    let bytes: Vec<u8> = bytes.into_iter().collect();
    Sha256::digest(&bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn float(v: &Value) -> f64 {
    v.as_str()
        .expect("floats are strings in the manifest")
        .parse()
        .expect("a float")
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_i64().expect("an int"))
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    ints(v).into_iter().map(|x| x as usize).collect()
}

/// Checks one value against its manifest entry; `at` names it in messages.
fn check_value(value: &StateValue, e: &Value, at: &str) {
    let kind = e["kind"].as_str().expect("kind");
    assert_eq!(value.kind(), kind, "{at}: kind");
    match value {
        StateValue::None => {}
        StateValue::Other(s) => {
            let repr = e["repr"].as_str().expect("repr");
            assert!(
                s.contains(repr.trim_matches('\'')),
                "{at}: {s:?} is not {repr}"
            );
        }
        StateValue::Tuple(items) => {
            let want = e["items"].as_array().expect("items");
            assert_eq!(items.len(), want.len(), "{at}: tuple length");
            for (i, (v, w)) in items.iter().zip(want).enumerate() {
                check_value(v, w, &format!("{at}[{i}]"));
            }
        }
        tensor => check_tensor(tensor, e, at),
    }
}

fn check_tensor(value: &StateValue, e: &Value, at: &str) {
    assert_eq!(value.shape().unwrap(), usizes(&e["shape"]), "{at}: shape");
    let first = e["first"].as_array().expect("first");
    let (got_digest, got_first): (String, Vec<f64>) = match value {
        StateValue::Float { data, .. } => (
            digest(data.iter().flat_map(|x| x.to_le_bytes())),
            data.iter().map(|&x| x as f64).collect(),
        ),
        StateValue::Int { data, .. } => (
            digest(data.iter().flat_map(|x| x.to_le_bytes())),
            data.iter().map(|&x| x as f64).collect(),
        ),
        StateValue::QInt8 { data, .. } => (
            digest(data.iter().flat_map(|x| x.to_le_bytes())),
            data.iter().map(|&x| x as f64).collect(),
        ),
        StateValue::QUInt8 { data, .. } => (
            digest(data.iter().copied()),
            data.iter().map(|&x| x as f64).collect(),
        ),
        StateValue::QInt32 { data, .. } => (
            digest(data.iter().flat_map(|x| x.to_le_bytes())),
            data.iter().map(|&x| x as f64).collect(),
        ),
        _ => unreachable!(),
    };
    assert_eq!(
        got_digest,
        e["digest"].as_str().unwrap(),
        "{at}: data digest"
    );
    for (i, w) in first.iter().enumerate() {
        let want = if w.is_string() {
            float(w) as f32 as f64
        } else {
            w.as_i64().unwrap() as f64
        };
        assert_eq!(got_first[i], want, "{at}: element {i}");
    }
    let Some(q) = value.qscheme() else {
        assert!(
            e.get("qscheme").is_none(),
            "{at}: PyTorch says it is quantized"
        );
        return;
    };
    match q {
        QScheme::PerTensorAffine { scale, zero_point } => {
            assert_eq!(e["qscheme"], "per_tensor_affine", "{at}: qscheme");
            assert_eq!(scale.to_bits(), float(&e["scale"]).to_bits(), "{at}: scale");
            assert_eq!(
                *zero_point,
                e["zero_point"].as_i64().unwrap(),
                "{at}: zero point"
            );
        }
        QScheme::PerChannelAffine {
            scales,
            zero_points,
            axis,
        } => {
            assert_eq!(e["qscheme"], "per_channel_affine", "{at}: qscheme");
            assert_eq!(*axis as i64, e["axis"].as_i64().unwrap(), "{at}: axis");
            assert_eq!(
                scales.len() as i64,
                e["channels"].as_i64().unwrap(),
                "{at}: channels"
            );
            let sd = digest(scales.iter().flat_map(|x| x.to_le_bytes()));
            assert_eq!(sd, e["scales_digest"].as_str().unwrap(), "{at}: scales");
            let zd = digest(zero_points.iter().flat_map(|x| x.to_le_bytes()));
            assert_eq!(
                zd,
                e["zero_points_digest"].as_str().unwrap(),
                "{at}: zero points"
            );
            for (i, s) in e["scales_first"].as_array().unwrap().iter().enumerate() {
                assert_eq!(scales[i].to_bits(), float(s).to_bits(), "{at}: scale {i}");
            }
            assert_eq!(
                zero_points[..4.min(zero_points.len())],
                ints(&e["zero_points_first"])[..],
                "{at}"
            );
        }
    }
}

fn check_checkpoint(file: &str, keys: &[Value]) -> usize {
    let sd = read(file);
    let mut want: Vec<&str> = keys.iter().map(|e| e["key"].as_str().unwrap()).collect();
    want.sort_unstable();
    let got: Vec<&str> = sd.keys().map(String::as_str).collect();
    assert_eq!(got, want, "{file}: the keys differ from PyTorch's");
    for e in keys {
        let key = e["key"].as_str().unwrap();
        check_value(&sd[key], e, &format!("{file} '{key}'"));
    }
    keys.len()
}

#[test]
fn every_key_matches_pytorch() {
    let m = manifest();
    let mut files = 0;
    let mut keys = 0;
    for ck in m["checkpoints"].as_array().unwrap() {
        let entries = ck["keys"].as_array().unwrap();
        for f in ["file", "legacy_file"] {
            if let Some(name) = ck[f].as_str() {
                keys += check_checkpoint(name, entries);
                files += 1;
            }
        }
    }
    assert_eq!(files, 7, "4 models + misc, 2 of them also legacy");
    println!("{keys} keys in {files} checkpoints equal to PyTorch's");
}

#[test]
fn legacy_and_zip_readings_agree() {
    for ck in manifest()["checkpoints"].as_array().unwrap() {
        if let Some(legacy) = ck["legacy_file"].as_str() {
            let zip = ck["file"].as_str().unwrap();
            assert!(read(zip) == read(legacy), "{zip} and {legacy} differ");
        }
    }
}

#[test]
fn converted_mobilenet_v2_layout() {
    // What the whole-model loader relies on, spelled out for one per-tensor and one
    // per-channel model.
    for (file, per_channel) in [
        ("mobilenet_v2_qnnpack_w025.pth", false),
        ("mobilenet_v2_x86_w050.pth", true),
    ] {
        let sd = read(file);
        let StateValue::Tuple(packed) = &sd["classifier.1._packed_params._packed_params"] else {
            panic!("{file}: linear packed params are not a tuple");
        };
        let [
            StateValue::QInt8 { shape, qscheme, .. },
            StateValue::Float { shape: bias, .. },
        ] = &packed[..]
        else {
            panic!("{file}: packed params are not (qint8 weight, float bias): {packed:?}");
        };
        assert_eq!(
            (shape.as_slice(), bias.as_slice()),
            (&[10, 1280][..], &[10][..])
        );
        assert_eq!(
            matches!(qscheme, QScheme::PerChannelAffine { axis: 0, .. }),
            per_channel
        );
        assert_eq!(
            sd["classifier.1._packed_params.dtype"],
            StateValue::Other("torch.qint8".into())
        );
        assert!(matches!(&sd["quant.scale"], StateValue::Float { shape, .. } if shape == &[1]));
        assert!(matches!(&sd["quant.zero_point"], StateValue::Int { shape, .. } if shape == &[1]));
        assert!(
            matches!(&sd["features.0.0.scale"], StateValue::Float { shape, .. } if shape.is_empty())
        );
        assert!(
            matches!(&sd["features.18.0.weight"], StateValue::QInt8 { shape, .. } if shape[0] == 1280)
        );
    }
}

#[test]
fn model_input_and_output_fixtures_load() {
    let m = manifest();
    let x = burn_qat::io::npy::read_f32(&dir().join("input.npy")).unwrap();
    assert_eq!(x.shape, [2, 3, 64, 48]);
    for ck in m["checkpoints"].as_array().unwrap() {
        let Some(out) = ck["output"].as_str() else {
            continue;
        };
        let bytes = std::fs::read(dir().join(out)).unwrap();
        let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(npy.shape(), [2, 10], "{out}");
        let y: Vec<u8> = npy.into_vec().unwrap();
        assert!(
            y.iter().any(|&v| v != y[0]),
            "{out}: a constant output tests nothing"
        );
        assert!(float(&ck["output_scale"]) > 0.0);
    }
}

// ------------------------------------------------------------------------------------------
// Malformed input: always Error::Checkpoint naming the file, never a panic.

/// Writes `bytes` to a temporary file and reads it.
fn read_bytes(
    bytes: &[u8],
) -> (
    tempfile::TempDir,
    PathBuf,
    burn_qat::Result<BTreeMap<String, StateValue>>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let (path, result) = read_bytes_in(&tmp, bytes);
    (tmp, path, result)
}

/// Writes `bytes` to `bad.pth` in `dir` (replacing the previous one: loops over thousands of
/// variants reuse one directory) and reads it.
fn read_bytes_in(
    dir: &tempfile::TempDir,
    bytes: &[u8],
) -> (PathBuf, burn_qat::Result<BTreeMap<String, StateValue>>) {
    let path = dir.path().join("bad.pth");
    std::fs::write(&path, bytes).unwrap();
    let result = read_quantized_state_dict(&path);
    (path, result)
}

/// Asserts a checkpoint error whose message contains `needle`, and returns the message.
#[track_caller]
fn expect_error(bytes: &[u8], needle: &str) -> String {
    let (_tmp, path, result) = read_bytes(bytes);
    match result {
        Err(e @ Error::Checkpoint { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "error does not name the file: {msg}"
            );
            assert!(msg.contains(needle), "expected '{needle}' in: {msg}");
            println!("{msg}");
            msg
        }
        Err(other) => panic!("expected Error::Checkpoint, got {other:?}"),
        Ok(sd) => panic!("expected an error, read {} keys", sd.len()),
    }
}

#[test]
fn hand_built_checkpoint_reads() {
    // The builders below make well-formed files: a 2x2 view of a 6-float storage at offset 1
    // with strides (1, 2) reads as [[1, 3], [2, 4]].
    let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let pkl = pk::state_dict(&[(
        "w",
        pk::tensor_strided("FloatStorage", "0", 6, 1, &[2, 2], &[1, 2]),
    )]);
    let (_tmp, _, sd) = read_bytes(&zip_checkpoint(&pkl, &[("0", &data)]));
    let sd = sd.unwrap();
    assert_eq!(
        sd["w"],
        StateValue::Float {
            shape: vec![2, 2],
            data: vec![1.0, 3.0, 2.0, 4.0]
        }
    );
}

#[test]
fn empty_file_is_an_error() {
    expect_error(b"", "empty");
}

#[test]
fn garbage_is_an_error() {
    expect_error(
        b"hello, this is not a checkpoint",
        "neither a zip archive nor a pickle",
    );
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    expect_error(&noise, "not");
    // Looks like a zip, is not one.
    expect_error(
        &[b"PK\x03\x04".as_slice(), &noise].concat(),
        "not a readable zip archive",
    );
    // A pickle, but not torch.save's legacy stream.
    expect_error(&[0x80, 2, b'N', b'.'], "magic number");
}

#[test]
fn truncated_files_are_errors() {
    for name in [
        "misc_dtypes.pth",
        "misc_dtypes.legacy.pth",
        "mobilenet_v2_qnnpack_w025.legacy.pth",
    ] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let n = bytes.len();
        let mut cuts = vec![
            1,
            2,
            3,
            5,
            10,
            17,
            40,
            100,
            300,
            1000,
            n / 3,
            n / 2,
            n - 1000,
            n - 64,
            n - 9,
            n - 1,
        ];
        // And every byte of the legacy headers and the start of the state pickle.
        cuts.extend(0..400);
        let tmp = tempfile::tempdir().unwrap();
        for cut in cuts.into_iter().filter(|&c| c > 0 && c < n) {
            let (_, result) = read_bytes_in(&tmp, &bytes[..cut]);
            match result {
                Err(Error::Checkpoint { .. }) => {}
                other => panic!("{name} cut at {cut}: expected a checkpoint error, got {other:?}"),
            }
        }
    }
}

#[test]
fn corrupted_data_pkl_is_an_error_or_still_a_state_dict() {
    let entries = zip_entries(&std::fs::read(dir().join("misc_dtypes.pth")).unwrap());
    let (pkl_name, pkl) = entries
        .iter()
        .find(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap();
    let rebuild = |pkl: &[u8]| {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in &entries {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(if name == pkl_name { pkl } else { data })
                .unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    // Flip each byte in turn (xor 0xff, then xor 0x01): most flips break the pickle, some
    // only change a value; none may panic.
    let mut errors = 0;
    let mut tries = 0;
    let tmp = tempfile::tempdir().unwrap();
    for at in 0..pkl.len() {
        for mask in [0xff, 0x01] {
            let mut bad = pkl.clone();
            bad[at] ^= mask;
            let (_, result) = read_bytes_in(&tmp, &rebuild(&bad));
            tries += 1;
            match result {
                Err(Error::Checkpoint { .. }) => errors += 1,
                Err(other) => panic!("flip at {at}: {other:?}"),
                Ok(_) => {}
            }
        }
    }
    println!("{errors} of {tries} byte flips in data.pkl are errors, the rest still parse");
    assert!(
        errors > tries / 2,
        "only {errors} of {tries} flips detected"
    );
    let msg = expect_error(
        &rebuild(&[&[0x80, 2, 0xfe][..], &pkl[3..]].concat()),
        "unsupported opcode",
    );
    assert!(msg.contains("data.pkl") && msg.contains("byte 2"), "{msg}");
    // Corrupting the archive itself (not rebuilt) fails the zip CRC check.
    let mut raw = std::fs::read(dir().join("misc_dtypes.pth")).unwrap();
    let at = raw.windows(pkl.len()).position(|w| w == &pkl[..]).unwrap() + 40;
    raw[at] ^= 0x55;
    expect_error(&raw, "data.pkl");
}

#[test]
fn huge_declared_sizes_are_refused() {
    let data = [0u8; 16];
    // A storage that claims 2^60 floats.
    let pkl = pk::state_dict(&[(
        "w",
        pk::tensor_strided("FloatStorage", "0", 1 << 60, 0, &[4], &[1]),
    )]);
    expect_error(&zip_checkpoint(&pkl, &[("0", &data)]), "declared");
    // A tensor that claims far more elements than its 4-float storage.
    let pkl = pk::state_dict(&[(
        "w",
        pk::tensor_strided("FloatStorage", "0", 4, 0, &[1 << 40], &[1]),
    )]);
    expect_error(&zip_checkpoint(&pkl, &[("0", &data)]), "reaches past");
    // Shape whose element count overflows.
    let pkl = pk::state_dict(&[(
        "w",
        pk::tensor_strided("FloatStorage", "0", 4, 0, &[1 << 40, 1 << 40], &[0, 0]),
    )]);
    expect_error(&zip_checkpoint(&pkl, &[("0", &data)]), "too many elements");
    // Stride-0 views of one element that would expand to 2^32 floats.
    let pkl = pk::state_dict(&[(
        "w",
        pk::tensor_strided("FloatStorage", "0", 4, 0, &[1 << 16, 1 << 16], &[0, 0]),
    )]);
    expect_error(&zip_checkpoint(&pkl, &[("0", &data)]), "far more data");
    // A legacy file whose storage record claims 2^62 elements.
    let bytes = std::fs::read(dir().join("misc_dtypes.legacy.pth")).unwrap();
    let keys_end = bytes.windows(2).rposition(|w| w == b"e.").unwrap() + 2;
    let mut bad = bytes[..keys_end].to_vec();
    bad.extend((1i64 << 62).to_le_bytes());
    bad.extend(&bytes[keys_end + 8..]);
    expect_error(&bad, "more than the");
}

#[test]
fn deeply_nested_pickles_are_refused() {
    let marks = [vec![0x80, 2], vec![b'('; 100_000]].concat();
    expect_error(&zip_checkpoint(&marks, &[]), "MARKs nested");
    let tuples = [vec![0x80, 2, b'N'], vec![0x85; 100_000], vec![b'.']].concat();
    expect_error(&zip_checkpoint(&tuples, &[]), "nested deeper");
    // A list holding itself, as a state-dict value.
    let cycle = pk::state_dict(&[("x", vec![b']', b'q', 9, b'h', 9, b'a'])]);
    expect_error(&zip_checkpoint(&cycle, &[]), "nested deeper");
    // (x, x) sixty levels deep: tiny pickle, 2^60 leaves.
    let mut dag = vec![b'N'];
    for _ in 0..60 {
        dag.extend([b'2', 0x86]);
    }
    expect_error(
        &zip_checkpoint(&pk::state_dict(&[("x", dag)]), &[]),
        "blow-up",
    );
}

#[test]
fn unknown_opcodes_and_globals_are_named() {
    let call = [
        pk::global("os", "system"),
        vec![b'('],
        pk::s("echo hi"),
        vec![b't', b'R'],
    ]
    .concat();
    expect_error(
        &zip_checkpoint(&pk::state_dict(&[("x", call)]), &[]),
        "unsupported call os.system",
    );
    expect_error(
        &zip_checkpoint(&pk::state_dict(&[("x", vec![b'i'])]), &[]),
        "unsupported opcode",
    );
    let storage = [
        pk::s("storage"),
        pk::global("torch", "ComplexFloatStorage"),
        pk::s("0"),
        pk::s("cpu"),
        pk::int(1),
    ];
    let pid = [vec![b'('], storage.concat(), vec![b't', b'Q']].concat();
    expect_error(
        &zip_checkpoint(&pk::state_dict(&[("x", pid)]), &[]),
        "unsupported storage type torch.ComplexFloatStorage",
    );
}

#[test]
fn inconsistent_tensors_are_refused() {
    let data = [0u8; 16];
    let zip = |entries: &[(&str, Vec<u8>)], storages: &[(&str, &[u8])]| {
        zip_checkpoint(&pk::state_dict(entries), storages)
    };
    // Offset past the end of the storage.
    let t = pk::tensor_strided("FloatStorage", "0", 4, 4, &[1], &[1]);
    expect_error(&zip(&[("w", t)], &[("0", &data)]), "reaches past");
    // Storage entry missing from the archive.
    let t = pk::tensor_strided("FloatStorage", "7", 4, 0, &[4], &[1]);
    expect_error(&zip(&[("w", t)], &[("0", &data)]), "archive/data/7");
    // Storage shorter than declared.
    let t = pk::tensor_strided("FloatStorage", "0", 5, 0, &[4], &[1]);
    expect_error(&zip(&[("w", t)], &[("0", &data)]), "holds 16 bytes");
    // One storage read as two dtypes.
    let a = pk::tensor_strided("FloatStorage", "0", 4, 0, &[4], &[1]);
    let b = pk::tensor_strided("IntStorage", "0", 4, 0, &[4], &[1]);
    expect_error(&zip(&[("a", a), ("b", b)], &[("0", &data)]), "used as both");
    // Size and stride of different ranks; a size that is not a tuple of ints.
    let t = pk::tensor_strided("FloatStorage", "0", 4, 0, &[2, 2], &[1]);
    expect_error(&zip(&[("w", t)], &[("0", &data)]), "strides");
    let t = pk::tensor_strided("FloatStorage", "0", 4, -1, &[4], &[1]);
    expect_error(&zip(&[("w", t)], &[("0", &data)]), "expected a size");
    // A quantized storage rebuilt as a plain tensor.
    let t = pk::tensor_strided("QInt8Storage", "0", 16, 0, &[4], &[1]);
    expect_error(&zip(&[("w", t)], &[("0", &data)]), "plain tensor");
    // Not a dict at the top; a non-string key.
    expect_error(
        &zip_checkpoint(&[0x80, 2, b']', b'.'], &[]),
        "not a state dict",
    );
    expect_error(
        &zip_checkpoint(&[0x80, 2, b'}', b'N', b'N', b's', b'.'], &[]),
        "not a str",
    );
    // Big-endian archives.
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    w.start_file("archive/byteorder", opts).unwrap();
    w.write_all(b"big").unwrap();
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(&pk::state_dict(&[])).unwrap();
    expect_error(&w.finish().unwrap().into_inner(), "byte order 'big'");
}

#[test]
fn per_channel_parameters_must_fit_the_tensor() {
    let w = [1u8, 2, 3, 4];
    let scales: Vec<u8> = [0.5f64, 0.25, 0.125]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let zps = [0u8; 24];
    let qtensor = |axis: i64| {
        [
            pk::global("torch._utils", "_rebuild_qtensor"),
            vec![b'(', b'('],
            pk::s("storage"),
            pk::global("torch", "QInt8Storage"),
            pk::s("0"),
            pk::s("cpu"),
            pk::int(4),
            vec![b't', b'Q'],
            pk::int(0),
            pk::tuple(&[2, 2]),
            pk::tuple(&[2, 1]),
            vec![b'('],
            pk::global("torch", "per_channel_affine"),
            pk::tensor_strided("DoubleStorage", "1", 3, 0, &[3], &[1]),
            pk::tensor_strided("LongStorage", "2", 3, 0, &[3], &[1]),
            pk::int(axis),
            vec![b't', 0x89, b')', b't', b'R'],
        ]
        .concat()
    };
    let storages: [(&str, &[u8]); 3] = [("0", &w), ("1", &scales), ("2", &zps)];
    expect_error(
        &zip_checkpoint(&pk::state_dict(&[("w", qtensor(0))]), &storages),
        "3 scales and 3 zero points for 2 channels",
    );
    expect_error(
        &zip_checkpoint(&pk::state_dict(&[("w", qtensor(2))]), &storages),
        "per-channel axis 2",
    );
}
