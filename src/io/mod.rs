//! Reading and writing PyTorch checkpoints and NumPy arrays.

pub mod atomic;
pub mod int8_file;
pub mod int8_state_dict;
pub mod npy;
mod pickle;
pub mod pytorch;
pub mod quantized_pth;
mod torch_archive;

pub use int8_file::{
    INT8_FORMAT, load_int8_model, looks_like_safetensors, read_int8_file, save_int8_file,
    save_int8_model,
};
pub use int8_state_dict::{StateDict, int8_state_dict, load_int8_state_dict};
pub use pytorch::{KeyMap, load_state_dict};
pub(crate) use quantized_pth::read_state_dict_keys;
pub use quantized_pth::{QScheme, StateValue, read_quantized_state_dict};

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Opens `path` for reading, with its length. A directory is refused here with a message that
/// says so, rather than with `EISDIR` from the first read (or not at all: a directory opens).
pub(crate) fn open_file(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a file",
            ),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads all of `path` (a regular file; see [`open_file`]). Allocates what the file holds, at
/// most `limit` bytes: a longer file is an error.
pub(crate) fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let (file, len) = open_file(path)?;
    if len > limit {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("the file is {len} bytes, more than the {limit} this reader accepts"),
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::FileTooLarge, "the file grew while read"),
        ));
    }
    Ok(bytes)
}
