//! The crate's error type: one readable message per failure, never a panic on user input.

use std::path::PathBuf;

/// Everything that can go wrong when the crate reads user input or checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint could not be parsed (corrupt, truncated or not a PyTorch file).
    #[error("{path}: not a readable PyTorch checkpoint: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// A model file of this crate (an int8 model, a burnpack training checkpoint) could not be
    /// parsed: corrupt, truncated, or not such a file.
    #[error("{path}: not a readable model file: {reason}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint parsed, but does not fit the model (missing, unexpected or mis-shaped keys).
    #[error("{path}: checkpoint does not match the model: {reason}")]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// The first offending keys, named.
        reason: String,
    },
    /// A `.npy` array could not be read or has the wrong dtype or rank.
    #[error("{path}: {reason}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A dataset file or folder is missing, empty or malformed.
    #[error("{0}")]
    Data(String),
    /// A tensor has a shape the operation cannot take.
    #[error("shape error: {0}")]
    Shape(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Pretrained weights could not be downloaded or verified.
    #[error("{0}")]
    Download(String),
    /// Training stopped: the loss or the model (weights, fake-quant scales) became non-finite.
    /// The message names the epoch and batch and the last good checkpoint.
    #[error("training stopped: {0}")]
    Training(String),
    /// A quantization step was used out of order or on bad data.
    #[error("quantization error: {0}")]
    Quant(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint that does not fit the model; the path is filled in by [`Error::at_path`]
    /// where the entries came from a file.
    pub fn mismatch(reason: impl Into<String>) -> Self {
        Error::CheckpointMismatch {
            path: PathBuf::from("<state dict>"),
            reason: reason.into(),
        }
    }

    /// Names the flags a configuration error came from (`--batch 8: <reason>`); other errors
    /// are returned as they are.
    pub fn for_flags(self, flags: impl std::fmt::Display) -> Self {
        match self {
            Error::Config(reason) => Error::Config(format!("{flags}: {reason}")),
            other => other,
        }
    }

    /// Names `file` in a checkpoint error that does not name its file yet.
    pub fn at_path(self, file: &std::path::Path) -> Self {
        match self {
            Error::CheckpointMismatch { path, reason } if path.as_os_str() == "<state dict>" => {
                Error::CheckpointMismatch {
                    path: file.to_path_buf(),
                    reason,
                }
            }
            other => other,
        }
    }
}
