//! NumPy `.npy` arrays in and out (float32, C order), as the CLI's input and output format.

use std::io::{BufWriter, Cursor, Write};
use std::path::Path;

use npyz::WriterBuilder;

use super::atomic::write_atomic;
use crate::{Error, Result};

/// A float32 array read from a `.npy` file: flat data in C order and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Elements in row-major order.
    pub data: Vec<f32>,
    /// The shape.
    pub shape: Vec<usize>,
}

/// Longest `.npy` header accepted (NumPy's own reader refuses headers over 10,000 bytes).
const MAX_HEADER_BYTES: usize = 1 << 16;
/// Deepest bracket nesting in a header (a real one nests two levels: the dict and the shape).
const MAX_HEADER_NESTING: usize = 8;

/// Reads a little-endian float32, C-ordered `.npy` file. Other dtypes, Fortran order, and
/// files shorter than their header declares are errors naming the file.
///
/// Hostile headers are refused before anything is allocated for them: a header longer than
/// 64 KiB or than the file, brackets nested deeper than 8 levels (the header is a Python
/// literal, parsed recursively), a shape whose data the file does not hold.
pub fn read_f32(path: &Path) -> Result<NpyArray> {
    let err = |reason: String| Error::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = super::read_file(path, u64::MAX)?;
    check_header(&bytes).map_err(err)?;
    let npy = npyz::NpyFile::new(Cursor::new(&bytes[..])).map_err(|e| {
        // The header parser's messages draw the header on several lines.
        let e = e.to_string();
        err(format!(
            "not a valid .npy file: {}",
            e.lines().next().unwrap_or("").trim_end()
        ))
    })?;
    let dtype = npy.dtype().descr();
    if dtype != "'<f4'" {
        return Err(err(format!(
            "expected a float32 ('<f4') array, found dtype {dtype}"
        )));
    }
    if npy.order() == npyz::Order::Fortran {
        return Err(err(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        ));
    }
    let shape = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| err(format!("dimension too large in shape {:?}", npy.shape())))?;
    // Refuse to allocate more than the file holds (a hostile header could declare any size).
    let declared = npy
        .shape()
        .iter()
        .try_fold(4u64, |acc, &d| acc.checked_mul(d));
    let file_len = bytes.len() as u64;
    if declared.is_none_or(|n| n > file_len) {
        return Err(err(format!(
            "header declares shape {shape:?}, more data than the file's {file_len} bytes"
        )));
    }
    let data = npy
        .into_vec::<f32>()
        .map_err(|e| err(format!("truncated or unreadable data: {e}")))?;
    Ok(NpyArray { data, shape })
}

/// Checks the preamble (magic, version, header length), the header's bracket nesting, and, when
/// the header states them plainly, its dtype (`'<f4'`) and that the file holds its shape's data
/// (npyz multiplies the dimensions unchecked).
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let magic = bytes
        .get(..6)
        .ok_or("not a valid .npy file: shorter than its magic number")?;
    if magic != b"\x93NUMPY" {
        return Err("not a valid .npy file: no \\x93NUMPY magic number".into());
    }
    let (len, start) = match bytes.get(6..8) {
        Some([1, 0]) => (
            bytes
                .get(8..10)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
            10,
        ),
        Some([2 | 3, 0]) => (
            bytes
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            12,
        ),
        Some(v) => return Err(format!(".npy format version {v:?} is not supported")),
        None => return Err("not a valid .npy file: truncated preamble".into()),
    };
    let len = len.ok_or("not a valid .npy file: truncated preamble")?;
    if len > MAX_HEADER_BYTES {
        return Err(format!(
            "header of {len} bytes is longer than the {MAX_HEADER_BYTES} accepted"
        ));
    }
    let header = bytes.get(start..start + len).ok_or_else(|| {
        format!(
            "header of {len} bytes is longer than the rest of the file ({} bytes)",
            bytes.len() - start
        )
    })?;
    let (mut depth, mut quote) = (0usize, None);
    for &c in header {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'(' | b'[' | b'{') => {
                depth += 1;
                if depth > MAX_HEADER_NESTING {
                    return Err(format!(
                        "header nested deeper than {MAX_HEADER_NESTING} levels"
                    ));
                }
            }
            (None, b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(header);
    if let Some(descr) = header_value(&text, "descr")
        && descr != "'<f4'"
        && descr != "\"<f4\""
    {
        return Err(format!(
            "expected a float32 ('<f4') array, found dtype {descr}"
        ));
    }
    let dims = header_value(&text, "shape").and_then(|shape| {
        let inner = shape.strip_prefix('(')?.strip_suffix(')')?;
        inner
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()
    });
    if let Some(dims) = dims {
        let available = (bytes.len() - start - len) as u64;
        let declared = dims.iter().try_fold(4u64, |acc, &d| acc.checked_mul(d));
        if declared.is_none_or(|n| n > available) {
            let need = declared.map_or("more than 2^64".to_string(), |n| n.to_string());
            return Err(format!(
                "header declares shape {dims:?} ({need} bytes of float32 data), but the file \
                 holds {available} bytes after the header (truncated or hostile)"
            ));
        }
    }
    Ok(())
}

/// The text of `key`'s value in a header dict (`{'key': value, ...}`): a bracketed or quoted
/// value whole, anything else up to the next `,` or `}`. `None` if the key is not found.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|k| header.find(k.as_str()).map(|i| i + k.len()))?;
    let rest = header
        .get(at..)?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = match rest.as_bytes().first()? {
        b'(' => rest.find(')')? + 1,
        b'[' => rest.find(']')? + 1,
        q @ (b'\'' | b'"') => rest.get(1..)?.find(*q as char)? + 2,
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    rest.get(..end).map(str::trim)
}

/// Writes a float32 C-ordered `.npy` file atomically (temporary file, then rename).
pub fn write_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(Error::Shape(format!(
            "cannot write {} values as shape {shape:?}",
            data.len()
        )));
    }
    write_atomic(path, |file| {
        let mut out = BufWriter::new(file);
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
            .writer(&mut out)
            .begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()?;
        out.flush()
    })
}
