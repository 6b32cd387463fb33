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
    /// A workflow stage (fuse, prepare, convert, save, export) met a layer in the wrong state
    /// for it, or one it cannot take: the layer's module path and what is wrong.
    #[error("quantization error: {}{problem}", layer_prefix(.path))]
    Stage {
        /// The layer's module path (`blocks.3.depthwise`).
        path: String,
        /// What is wrong.
        problem: StageProblem,
    },
}

/// What is wrong with a layer at a stage of the workflow ([`Error::Stage`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageProblem {
    /// Fused a second time.
    #[error("this {kind} is already fused")]
    AlreadyFused {
        /// The layer's kind.
        kind: &'static str,
    },
    /// Needs fusing (conv/linear + batch norm) before this stage.
    #[error("a {kind} followed by batch norm must be fused with {how} before preparing")]
    NotFused {
        /// The layer's kind.
        kind: &'static str,
        /// Which fusion, named as the user calls it.
        how: &'static str,
    },
    /// Prepared a second time.
    #[error("the model is already prepared (a layer already has an observer or fake-quant)")]
    AlreadyPrepared,
    /// Converted (or exported) before `prepare` / `prepare_qat`.
    #[error("convert before prepare: {what}")]
    NotPrepared {
        /// What is missing.
        what: String,
    },
    /// Converted before the observers saw data.
    #[error("convert before calibration: {what}")]
    NotCalibrated {
        /// Which observer saw nothing.
        what: String,
    },
    /// Used as int8 before `convert` (or loading an int8 checkpoint).
    #[error("has no int8 form: convert the model (or load an int8 checkpoint) first")]
    NotConverted,
    /// A float stage (convert again, float or QDQ export) of a layer whose float weights
    /// `strip_float` freed.
    #[error(
        "its float weights were freed by strip_float: only its int8 forward, int8 state dict and \
         int8 ONNX remain"
    )]
    FloatStripped,
    /// A layer or configuration the stage cannot take.
    #[error("{0}")]
    Unsupported(String),
}

/// `` `path`: `` before a stage problem, nothing for a problem not placed yet.
fn layer_prefix(path: &str) -> String {
    match path {
        "" => String::new(),
        path => format!("`{path}`: "),
    }
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

    /// A stage problem at a layer whose path the driver fills in ([`Error::at_layer`]).
    pub fn stage(problem: StageProblem) -> Self {
        Error::Stage {
            path: String::new(),
            problem,
        }
    }

    /// Names the layer at `path` in an error a layer's stage method returned: a stage problem
    /// gets the path, other errors a `` `path`: `` prefix once.
    pub fn at_layer(self, path: &str) -> Self {
        match self {
            Error::Stage { path: p, problem } if p.is_empty() => Error::Stage {
                path: path.to_string(),
                problem,
            },
            Error::Quant(m) => Error::Quant(format!("`{path}`: {m}")),
            Error::Shape(m) => Error::Shape(format!("`{path}`: {m}")),
            Error::Config(m) => Error::Config(format!("`{path}`: {m}")),
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
