//! The crate's own int8 model format: a [safetensors](https://huggingface.co/docs/safetensors)
//! file holding a converted model's state dict ([`crate::io::StateDict`]) with its int8
//! weights stored as int8, so a width-1.0 MobileNetV2 takes about as much disk as torchvision's
//! int8 checkpoint. Any safetensors reader can open it.
//!
//! Layout: a float tensor is `F32`, an integer one `I64`; a qint8 weight `w` is `I8` with its
//! quantization beside it: `w:scale` (`F32`, one value per tensor or per output channel),
//! `w:zero_point` (`I8`, same count) and, when per channel, `w:axis` (`I64`, `[1]`). The
//! metadata holds `format = burn-qat-int8`, `version = 1`, the `engine` the model was converted
//! for, and whatever the caller adds (e.g. the model configuration).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorInfo, TensorView};

use super::atomic::write_atomic;
use super::quantized_pth::{QScheme, StateValue};
use crate::io::StateDict;
use crate::{Error, Result};

/// The `format` metadata value of the crate's int8 files.
pub const INT8_FORMAT: &str = "burn-qat-int8";
const VERSION: &str = "1";

/// A tensor to write: dtype, shape, little-endian bytes.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn le<T: Copy, const N: usize>(values: &[T], to_bytes: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_bytes(v)).collect()
}

fn encode(key: &str, value: &StateValue, out: &mut Vec<(String, Raw)>) -> Result<()> {
    let unsupported = || {
        Error::Quant(format!(
            "`{key}` is a {} value, which the int8 format does not store",
            value.kind()
        ))
    };
    match value {
        StateValue::Float { shape, data } => out.push((
            key.to_string(),
            Raw {
                dtype: Dtype::F32,
                shape: shape.clone(),
                bytes: le(data, f32::to_le_bytes),
            },
        )),
        StateValue::Int { shape, data } => out.push((
            key.to_string(),
            Raw {
                dtype: Dtype::I64,
                shape: shape.clone(),
                bytes: le(data, i64::to_le_bytes),
            },
        )),
        StateValue::QInt8 {
            shape,
            data,
            qscheme,
        } => {
            let (scales, zero_points, axis) = match qscheme {
                QScheme::PerTensorAffine { scale, zero_point } => {
                    (vec![*scale as f32], vec![*zero_point], None)
                }
                QScheme::PerChannelAffine {
                    scales,
                    zero_points,
                    axis,
                } => (
                    scales.iter().map(|&s| s as f32).collect(),
                    zero_points.clone(),
                    Some(*axis as i64),
                ),
            };
            let zero_points = zero_points
                .iter()
                .map(|&z| i8::try_from(z).map_err(|_| unsupported()))
                .collect::<Result<Vec<i8>>>()?;
            let count = scales.len();
            out.push((
                key.to_string(),
                Raw {
                    dtype: Dtype::I8,
                    shape: shape.clone(),
                    bytes: le(data, i8::to_le_bytes),
                },
            ));
            out.push((
                format!("{key}:scale"),
                Raw {
                    dtype: Dtype::F32,
                    shape: vec![count],
                    bytes: le(&scales, f32::to_le_bytes),
                },
            ));
            out.push((
                format!("{key}:zero_point"),
                Raw {
                    dtype: Dtype::I8,
                    shape: vec![count],
                    bytes: le(&zero_points, i8::to_le_bytes),
                },
            ));
            if let Some(axis) = axis {
                out.push((
                    format!("{key}:axis"),
                    Raw {
                        dtype: Dtype::I64,
                        shape: vec![1],
                        bytes: axis.to_le_bytes().to_vec(),
                    },
                ));
            }
        }
        StateValue::None => {}
        _ => return Err(unsupported()),
    }
    Ok(())
}

/// Writes `state` to `path` atomically, with the format's metadata, `engine`, and `extra`
/// metadata entries.
///
/// The file is deterministic: the same state and metadata give the same bytes (the header's
/// JSON keys are sorted; the tensors are laid out as safetensors' own writer lays them out, by
/// dtype alignment, largest first, then by name), so that seeded runs can be compared by hash.
pub fn save_int8_file(
    path: &Path,
    state: &StateDict,
    engine: &str,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut raws = Vec::new();
    for (key, value) in state {
        encode(key, value, &mut raws)?;
    }
    let mut metadata = extra.clone();
    metadata.insert("format".into(), INT8_FORMAT.into());
    metadata.insert("version".into(), VERSION.into());
    metadata.insert("engine".into(), engine.into());
    let header = safetensors_header(&mut raws, &metadata)?;
    write_atomic(path, |f| {
        let mut out = std::io::BufWriter::new(f);
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        for (_, raw) in &raws {
            out.write_all(&raw.bytes)?;
        }
        out.flush()
    })
}

/// Largest safetensors header the readers accept (the safetensors crate's limit).
const MAX_HEADER_BYTES: usize = 100_000_000;

/// The safetensors header of `tensors` and `metadata`, written here rather than by
/// `safetensors::serialize` (which takes the metadata as a `HashMap` and writes it in hash
/// order): JSON with its keys sorted, padded with spaces to a multiple of 8 bytes. Sorts
/// `tensors` into the order of their data, as `safetensors::serialize` does (by dtype
/// alignment, largest first, then by name).
fn safetensors_header(
    tensors: &mut [(String, Raw)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    tensors.sort_by(|(a, ra), (b, rb)| rb.dtype.cmp(&ra.dtype).then(a.cmp(b)));
    let json_err = |e: serde_json::Error| Error::Quant(format!("serializing the int8 model: {e}"));
    let mut entries = BTreeMap::new();
    entries.insert(
        "__metadata__".to_string(),
        serde_json::to_value(metadata).map_err(json_err)?,
    );
    let mut offset = 0;
    for (key, raw) in tensors.iter() {
        // Checks that the bytes hold the shape.
        TensorView::new(raw.dtype, raw.shape.clone(), &raw.bytes)
            .map_err(|e| Error::Quant(format!("`{key}`: {e}")))?;
        let end = offset + raw.bytes.len();
        let info = TensorInfo {
            dtype: raw.dtype,
            shape: raw.shape.clone(),
            data_offsets: (offset, end),
        };
        offset = end;
        let info = serde_json::to_value(&info).map_err(json_err)?;
        if entries.insert(key.clone(), info).is_some() {
            return Err(Error::Quant(format!(
                "`{key}` appears twice in the int8 model (a name ending in `:scale`, \
                 `:zero_point` or `:axis` collides with a quantized weight's)"
            )));
        }
    }
    let mut header = serde_json::to_vec(&entries).map_err(json_err)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() > MAX_HEADER_BYTES {
        return Err(Error::Quant(format!(
            "the int8 model's header would be {} bytes, more than the {MAX_HEADER_BYTES} \
             safetensors readers accept",
            header.len()
        )));
    }
    Ok(header)
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn floats(view: &TensorView<'_>) -> Option<Vec<f32>> {
    (view.dtype() == Dtype::F32).then(|| {
        view.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

fn int64s(view: &TensorView<'_>) -> Option<Vec<i64>> {
    (view.dtype() == Dtype::I64).then(|| {
        view.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()
    })
}

fn int8s(view: &TensorView<'_>) -> Option<Vec<i8>> {
    (view.dtype() == Dtype::I8).then(|| view.data().iter().map(|&b| b as i8).collect())
}

/// Reads an int8 model file: its state dict and metadata (`engine` among them). Errors name the
/// file: not a safetensors file, not this format, a tensor of the wrong type.
pub fn read_int8_file(path: &Path) -> Result<(StateDict, BTreeMap<String, String>)> {
    let bytes = super::read_file(path, u64::MAX)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| corrupt(path, format!("not a safetensors file ({e})")))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(INT8_FORMAT) {
        return Err(corrupt(
            path,
            format!("not a burn-qat int8 model (no `format = {INT8_FORMAT}` metadata)"),
        ));
    }
    if metadata.get("version").map(String::as_str) != Some(VERSION) {
        return Err(corrupt(
            path,
            format!(
                "int8 format version {:?}; this build reads version {VERSION}",
                metadata.get("version")
            ),
        ));
    }
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| corrupt(path, format!("not a safetensors file ({e})")))?;
    let tensors: BTreeMap<String, TensorView<'_>> = file.tensors().into_iter().collect();
    let mut state = StateDict::new();
    for (key, view) in &tensors {
        if key.contains(':') {
            continue; // quantization of a weight, read with it
        }
        let shape = view.shape().to_vec();
        let bad = |what: &str| corrupt(path, format!("`{key}`: {what}"));
        let value = match view.dtype() {
            Dtype::F32 => StateValue::Float {
                shape,
                data: floats(view).ok_or_else(|| bad("not f32"))?,
            },
            Dtype::I64 => StateValue::Int {
                shape,
                data: int64s(view).ok_or_else(|| bad("not i64"))?,
            },
            Dtype::I8 => {
                let data = int8s(view).ok_or_else(|| bad("not i8"))?;
                let scales = tensors
                    .get(&format!("{key}:scale"))
                    .and_then(floats)
                    .ok_or_else(|| bad("an int8 tensor needs an f32 `:scale` beside it"))?;
                let zero_points = tensors
                    .get(&format!("{key}:zero_point"))
                    .and_then(int8s)
                    .ok_or_else(|| bad("an int8 tensor needs an i8 `:zero_point` beside it"))?;
                if scales.len() != zero_points.len() || scales.is_empty() {
                    return Err(bad("`:scale` and `:zero_point` differ in length"));
                }
                if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(bad(&format!("scale {s} is not a positive finite number")));
                }
                let axis = tensors.get(&format!("{key}:axis")).and_then(int64s);
                let qscheme = match axis.as_deref() {
                    None if scales.len() == 1 => QScheme::PerTensorAffine {
                        scale: scales[0] as f64,
                        zero_point: zero_points[0] as i64,
                    },
                    Some(&[axis]) if (0..shape.len() as i64).contains(&axis) => {
                        let channels = shape[axis as usize];
                        if scales.len() != channels {
                            return Err(bad(&format!(
                                "{} per-channel scales for {channels} channels along axis {axis}",
                                scales.len()
                            )));
                        }
                        QScheme::PerChannelAffine {
                            scales: scales.iter().map(|&s| s as f64).collect(),
                            zero_points: zero_points.iter().map(|&z| z as i64).collect(),
                            axis: axis as usize,
                        }
                    }
                    _ => return Err(bad("inconsistent per-channel quantization")),
                };
                StateValue::QInt8 {
                    shape,
                    data,
                    qscheme,
                }
            }
            other => return Err(bad(&format!("unexpected dtype {other:?}"))),
        };
        state.insert(key.clone(), value);
    }
    Ok((state, metadata))
}

/// Saves a converted model in the crate's int8 format (atomically), with `extra` metadata.
pub fn save_int8_model<M: crate::nn::Quantizable>(
    model: &M,
    path: &Path,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let engine = crate::convert::converted_engine(model)?;
    let state = crate::io::int8_state_dict(model)?;
    save_int8_file(path, &state, engine.name(), extra)
}

/// Loads an int8 model file into `model` (same architecture, ReLU6 replaced) and returns the
/// engine it was converted for. Errors name the file and the offending entry.
pub fn load_int8_model<M: crate::nn::Quantizable + Clone>(
    model: &mut M,
    path: &Path,
) -> Result<crate::int8::Engine> {
    let (state, metadata) = read_int8_file(path)?;
    let engine: crate::int8::Engine = metadata
        .get("engine")
        .ok_or_else(|| corrupt(path, "no `engine` metadata"))?
        .parse()
        .map_err(|e: Error| corrupt(path, e.to_string()))?;
    crate::io::load_int8_state_dict(model, &state, engine).map_err(|e| e.at_path(path))?;
    Ok(engine)
}

/// Whether `path` starts like a safetensors file (an int8 model of this crate) rather than a
/// PyTorch checkpoint.
pub fn looks_like_safetensors(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| head[8] == b'{')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A small state dict with every kind of entry the format stores.
    fn state() -> StateDict {
        let mut state = StateDict::new();
        state.insert(
            "features.0.weight".into(),
            StateValue::QInt8 {
                shape: vec![2, 1, 1, 3],
                data: vec![-128, -1, 0, 1, 2, 127],
                qscheme: QScheme::PerChannelAffine {
                    scales: vec![0.5, 0.25],
                    zero_points: vec![0, -3],
                    axis: 0,
                },
            },
        );
        state.insert(
            "classifier.weight".into(),
            StateValue::QInt8 {
                shape: vec![3],
                data: vec![5, -6, 7],
                qscheme: QScheme::PerTensorAffine {
                    scale: 0.125,
                    zero_point: 4,
                },
            },
        );
        state.insert(
            "features.0.bias".into(),
            StateValue::Float {
                shape: vec![2],
                data: vec![1.5, -2.0],
            },
        );
        state.insert(
            "quant.scale".into(),
            StateValue::Float {
                shape: vec![],
                data: vec![0.02],
            },
        );
        state.insert(
            "quant.zero_point".into(),
            StateValue::Int {
                shape: vec![1],
                data: vec![64],
            },
        );
        state
    }

    /// Many metadata entries: a hash map of them iterates in a different order almost every
    /// time it is built.
    fn extra() -> BTreeMap<String, String> {
        (0..16)
            .map(|i| (format!("key{i:02}"), format!("value \"{i}\"\n")))
            .collect()
    }

    #[test]
    fn saving_the_same_model_twice_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let path = dir.path().join(format!("m{i}.int8.safetensors"));
                save_int8_file(&path, &state(), "x86", &extra()).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        for (i, bytes) in files.iter().enumerate().skip(1) {
            assert!(
                bytes == &files[0],
                "save {i} differs from save 0:\n{}\n{}",
                String::from_utf8_lossy(&bytes[..200.min(bytes.len())]),
                String::from_utf8_lossy(&files[0][..200.min(files[0].len())])
            );
        }
    }

    #[test]
    fn the_header_is_safetensors_with_its_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.int8.safetensors");
        save_int8_file(&path, &state(), "qnnpack", &extra()).unwrap();
        let ours = std::fs::read(&path).unwrap();
        // Read back through this crate's reader.
        let (loaded, metadata) = read_int8_file(&path).unwrap();
        assert!(loaded == state());
        assert_eq!(metadata["engine"], "qnnpack");
        assert_eq!(metadata["format"], INT8_FORMAT);
        assert_eq!(metadata["key07"], "value \"7\"\n");
        // The header length is 8-aligned, the header is JSON with sorted keys.
        let n = u64::from_le_bytes(ours[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&ours[8..8 + n]).unwrap();
        assert!(header.starts_with("{\"__metadata__\":{"), "{header}");
        // The same tensors and data layout as safetensors' own writer gives.
        let mut raws = Vec::new();
        for (k, v) in &state() {
            encode(k, v, &mut raws).unwrap();
        }
        let views: Vec<_> = raws
            .iter()
            .map(|(k, r)| {
                (
                    k.clone(),
                    TensorView::new(r.dtype, r.shape.clone(), &r.bytes).unwrap(),
                )
            })
            .collect();
        let mut meta: HashMap<String, String> = extra().into_iter().collect();
        meta.insert("format".into(), INT8_FORMAT.into());
        meta.insert("version".into(), VERSION.into());
        meta.insert("engine".into(), "qnnpack".into());
        let theirs = safetensors::serialize(views, Some(meta)).unwrap();
        let m = u64::from_le_bytes(theirs[..8].try_into().unwrap()) as usize;
        assert_eq!(ours[8 + n..], theirs[8 + m..], "the data sections differ");
        let a = safetensors::SafeTensors::deserialize(&ours).unwrap();
        let b = safetensors::SafeTensors::deserialize(&theirs).unwrap();
        let (_, ha) = safetensors::SafeTensors::read_metadata(&ours).unwrap();
        let (_, hb) = safetensors::SafeTensors::read_metadata(&theirs).unwrap();
        assert_eq!(ha.metadata(), hb.metadata());
        let mut names = a.names();
        names.sort();
        let mut their_names = b.names();
        their_names.sort();
        assert_eq!(names, their_names);
        for name in names {
            let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
            assert_eq!(
                (x.dtype(), x.shape(), x.data()),
                (y.dtype(), y.shape(), y.data()),
                "{name}"
            );
            assert_eq!(
                ha.info(name).unwrap().data_offsets,
                hb.info(name).unwrap().data_offsets,
                "{name}"
            );
        }
    }
}
