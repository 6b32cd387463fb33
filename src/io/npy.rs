//! NumPy `.npy` arrays in and out (float32, C order), as the CLI's input and output format.

use std::io::{BufReader, BufWriter, Write};
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

/// Reads a little-endian float32, C-ordered `.npy` file. Other dtypes, Fortran order, and
/// files shorter than their header declares are errors naming the file.
pub fn read_f32(path: &Path) -> Result<NpyArray> {
    let err = |reason: String| Error::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| err(format!("not a valid .npy file: {e}")))?;
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
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    // Refuse to allocate more than the file can hold (a hostile header could declare any size).
    let declared = npy
        .shape()
        .iter()
        .try_fold(4u64, |acc, &d| acc.checked_mul(d));
    if declared.is_none_or(|bytes| bytes > file_len) {
        return Err(err(format!(
            "header declares shape {shape:?}, more data than the file's {file_len} bytes"
        )));
    }
    let data = npy
        .into_vec::<f32>()
        .map_err(|e| err(format!("truncated or unreadable data: {e}")))?;
    Ok(NpyArray { data, shape })
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
