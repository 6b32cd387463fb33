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
