//! Hand-built `torch.save` files for the checkpoint reader tests (`quantized_pth`,
//! `malformed_inputs`). Not in `common`: the onnx-check package shares that module (a symlink)
//! but has no zip dependency.
#![allow(dead_code)]

use std::io::{Cursor, Write};

/// Pickle pieces for hand-built `torch.save` files (protocol 2, as `torch.save` writes).
pub mod pk {
    pub fn s(text: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend((text.len() as u32).to_le_bytes());
        v.extend(text.as_bytes());
        v
    }

    pub fn int(i: i64) -> Vec<u8> {
        match i32::try_from(i) {
            Ok(small) => [&[b'J'][..], &small.to_le_bytes()].concat(),
            Err(_) => [&[0x8a, 8][..], &i.to_le_bytes()].concat(),
        }
    }

    pub fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    pub fn tuple(items: &[i64]) -> Vec<u8> {
        let mut v = vec![b'('];
        for &i in items {
            v.extend(int(i));
        }
        v.push(b't');
        v
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    pub fn tensor_strided(
        ty: &str,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> Vec<u8> {
        [
            global("torch._utils", "_rebuild_tensor_v2"),
            vec![b'(', b'('],
            s("storage"),
            global("torch", ty),
            s(key),
            s("cpu"),
            int(numel),
            vec![b't', b'Q'],
            int(offset),
            tuple(size),
            tuple(stride),
            vec![0x89],
            global("collections", "OrderedDict"),
            vec![b')', b'R', b't', b'R'],
        ]
        .concat()
    }

    /// `{key: value, ...}` as a whole pickle.
    pub fn state_dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut v = vec![0x80, 2, b'}', b'('];
        for (k, val) in entries {
            v.extend(s(k));
            v.extend(val);
        }
        v.extend([b'u', b'.']);
        v
    }

    /// [`tensor_strided`] at offset 0 with contiguous strides.
    pub fn tensor(ty: &str, key: &str, numel: i64, size: &[i64]) -> Vec<u8> {
        let mut stride = vec![1i64; size.len()];
        for d in (0..size.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1].saturating_mul(size[d + 1]);
        }
        tensor_strided(ty, key, numel, 0, size, &stride)
    }

    /// `OrderedDict({key: value, ...})` as a whole pickle.
    pub fn ordered_state_dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut v = [
            &[0x80, 2][..],
            &global("collections", "OrderedDict"),
            b")R(",
        ]
        .concat();
        for (k, val) in entries {
            v.extend(s(k));
            v.extend(val);
        }
        v.extend([b'u', b'.']);
        v
    }
}

/// A zip checkpoint like torch.save's: `archive/data.pkl` and `archive/data/<key>`.
pub fn zip_checkpoint(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(pkl).unwrap();
    for (key, data) in storages {
        w.start_file(format!("archive/data/{key}"), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The storage types of `torch.save` that the float tests write, and how each holds a value
/// (floats rounded to nearest, ties to even, as `tensor.to(dtype)` rounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `torch.float32`.
    Float,
    /// `torch.float16`.
    Half,
    /// `torch.bfloat16`.
    BFloat16,
    /// `torch.float64`.
    Double,
    /// `torch.int64`.
    Long,
    /// `torch.int32`.
    Int,
    /// `torch.bool`.
    Bool,
}

impl Storage {
    /// The storage class `torch.save` names (`torch.HalfStorage`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Storage::Float => "FloatStorage",
            Storage::Half => "HalfStorage",
            Storage::BFloat16 => "BFloat16Storage",
            Storage::Double => "DoubleStorage",
            Storage::Long => "LongStorage",
            Storage::Int => "IntStorage",
            Storage::Bool => "BoolStorage",
        }
    }

    /// Little-endian bytes of `values` in this type (integer types truncate, bool is `v != 0`).
    pub fn bytes(self, values: &[f64]) -> Vec<u8> {
        use burn::tensor::{bf16, f16};
        values
            .iter()
            .flat_map(|&v| match self {
                Storage::Float => (v as f32).to_le_bytes().to_vec(),
                Storage::Half => f16::from_f64(v).to_le_bytes().to_vec(),
                Storage::BFloat16 => bf16::from_f64(v).to_le_bytes().to_vec(),
                Storage::Double => v.to_le_bytes().to_vec(),
                Storage::Long => (v as i64).to_le_bytes().to_vec(),
                Storage::Int => (v as i32).to_le_bytes().to_vec(),
                Storage::Bool => vec![u8::from(v != 0.0)],
            })
            .collect()
    }

    /// `v` as this type holds it, widened to f32: what a float32 parameter loaded from it holds
    /// (PyTorch's `param.copy_(value)`).
    pub fn as_f32(self, v: f64) -> f32 {
        use burn::tensor::{bf16, f16};
        match self {
            Storage::Float | Storage::Double => v as f32,
            Storage::Half => f16::from_f64(v).to_f32(),
            Storage::BFloat16 => bf16::from_f64(v).to_f32(),
            Storage::Long => (v as i64) as f32,
            Storage::Int => (v as i32) as f32,
            Storage::Bool => f32::from(u8::from(v != 0.0)),
        }
    }
}

/// A zip checkpoint of `OrderedDict({key: tensor, ...})`, each tensor `(key, storage type,
/// shape, values)` contiguous in its own storage.
pub fn tensors_checkpoint(entries: &[(&str, Storage, &[usize], &[f64])]) -> Vec<u8> {
    let keys: Vec<String> = (0..entries.len()).map(|i| i.to_string()).collect();
    let pickled: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .zip(&keys)
        .map(|((name, storage, shape, values), key)| {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let tensor = pk::tensor(storage.name(), key, values.len() as i64, &shape);
            (*name, tensor)
        })
        .collect();
    let data: Vec<Vec<u8>> = entries
        .iter()
        .map(|(_, storage, _, values)| storage.bytes(values))
        .collect();
    let storages: Vec<(&str, &[u8])> = keys
        .iter()
        .zip(&data)
        .map(|(k, d)| (k.as_str(), d.as_slice()))
        .collect();
    zip_checkpoint(&pk::ordered_state_dict(&pickled), &storages)
}

/// The entries of a zip file, in order: `(name, bytes)`.
pub fn zip_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

/// A zip file (stored, no compression) of `(name, bytes)` entries, in order.
pub fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}
