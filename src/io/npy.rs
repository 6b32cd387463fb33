//! NumPy `.npy` arrays in and out (float32, C order), as the CLI's input and output format.

use std::io::{BufWriter, Cursor, Read, Write};
use std::path::Path;

use npyz::WriterBuilder;

use super::atomic::write_atomic;
use crate::{Error, Result, limits};

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
/// Nothing is read or allocated past what the header declares: the preamble and header are read
/// with a bound, then exactly the data bytes of the declared shape, so a FIFO, a pipe or a
/// device (`/dev/stdin`, `/dev/zero`) is read no further than the array. Hostile headers are
/// refused before anything is allocated for them: a header longer than 64 KiB or than the file,
/// brackets nested deeper than 8 levels (the header is a Python literal, parsed recursively), a
/// shape whose data a regular file does not hold, or that does not fit in memory
/// ([`crate::limits::check_fits`]).
pub fn read_f32(path: &Path) -> Result<NpyArray> {
    let err = |reason: String| Error::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let io_err = |e| Error::io(path, e);
    let (file, file_len) = super::open_file(path)?;
    // The length of a regular file bounds its data; a FIFO, pipe or device has no length.
    let regular = file.metadata().map_err(io_err)?.is_file();
    // Unbuffered: nothing past the array is read.
    let mut input = file;
    // The preamble: magic, version, header length (10 bytes in version 1, 12 in 2 and 3).
    let mut bytes = Vec::new();
    read_up_to(&mut input, &mut bytes, 12).map_err(io_err)?;
    let (start, len) = preamble(&bytes).map_err(err)?;
    // The header, at most MAX_HEADER_BYTES (checked by `preamble`).
    read_up_to(&mut input, &mut bytes, start + len).map_err(io_err)?;
    // A version-1 preamble read 12 bytes: those past a header shorter than 2 bytes are data.
    let data_head = bytes.split_off(bytes.len().min(start + len));
    let available = regular.then(|| file_len.saturating_sub((start + len) as u64));
    check_header(&bytes, start, len, available).map_err(err)?;
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
    // Refuse to allocate more than the file holds or the machine has (a hostile header could
    // declare any size).
    let declared = limits::product(std::iter::once(4).chain(npy.shape().iter().copied()));
    if let Some(available) = available
        && declared.is_none_or(|n| n > available)
    {
        return Err(err(format!(
            "header declares shape {shape:?}, more data than the file's {file_len} bytes"
        )));
    }
    limits::check_fits(declared)
        .map_err(|reason| err(format!("header declares shape {shape:?}: {reason}")))?;
    let declared = declared
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            err(format!(
                "header declares shape {shape:?}, more data than this machine can address"
            ))
        })?;
    // Exactly the declared data, not the rest of the stream.
    let mut data = Vec::new();
    data.try_reserve_exact(declared)
        .map_err(|e| err(format!("header declares shape {shape:?}: {e}")))?;
    data.extend_from_slice(&data_head[..data_head.len().min(declared)]);
    read_up_to(&mut input, &mut data, declared).map_err(io_err)?;
    if data.len() < declared {
        return Err(err(format!(
            "truncated data: the header declares shape {shape:?} ({declared} bytes of float32 \
             data), the input ends after {} bytes",
            data.len()
        )));
    }
    let data = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NpyArray { data, shape })
}

/// Reads from `input` until `bytes` holds `total` bytes or the input ends.
fn read_up_to(input: &mut impl Read, bytes: &mut Vec<u8>, total: usize) -> std::io::Result<()> {
    let missing = total.saturating_sub(bytes.len()) as u64;
    input.take(missing).read_to_end(bytes).map(|_| ())
}

/// Checks the preamble (magic, version, header length) at the start of `bytes`; returns where
/// the header starts and its length, at most [`MAX_HEADER_BYTES`].
fn preamble(bytes: &[u8]) -> std::result::Result<(usize, usize), String> {
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
    Ok((start, len))
}

/// Checks the header (`bytes[start..start + len]`, after the preamble): that it was read whole,
/// its bracket nesting, and, when the header states them plainly, its dtype (`'<f4'`) and, for
/// a regular file with `available` bytes after the header, that the file holds its shape's data
/// (npyz multiplies the dimensions unchecked).
fn check_header(
    bytes: &[u8],
    start: usize,
    len: usize,
    available: Option<u64>,
) -> std::result::Result<(), String> {
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
        let declared = dims.iter().try_fold(4u64, |acc, &d| acc.checked_mul(d));
        let need = declared.map_or("more than 2^64".to_string(), |n| n.to_string());
        match available {
            Some(available) if declared.is_none_or(|n| n > available) => {
                return Err(format!(
                    "header declares shape {dims:?} ({need} bytes of float32 data), but the \
                     file holds {available} bytes after the header (truncated or hostile)"
                ));
            }
            // A stream's length is not known: an overflow is refused here, before npyz
            // multiplies the dimensions; the size is checked against memory later.
            None if declared.is_none() => {
                return Err(format!(
                    "header declares shape {dims:?} ({need} bytes of float32 data)"
                ));
            }
            _ => {}
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
