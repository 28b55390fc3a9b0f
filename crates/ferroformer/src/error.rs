//! One error type for the whole library.
//!
//! Every failure a user can cause (a wrong shape, a missing tensor, a bad config value) is
//! reported with the name of the thing that was wrong, what was expected and what was found.

use std::path::PathBuf;

/// Errors raised by ferroformer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid (e.g. `d_model` not divisible by `num_heads`).
    #[error("invalid configuration: `{param}`: {reason}")]
    Config {
        /// The offending parameter.
        param: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An input tensor has the wrong shape.
    #[error("shape mismatch for {what}: expected {expected}, found {found:?}")]
    Shape {
        /// Which input (e.g. "attention_mask").
        what: String,
        /// A description of the expected shape.
        expected: String,
        /// The shape that was passed.
        found: Vec<usize>,
    },
    /// A weight file lacks a tensor the model needs.
    #[error("missing tensor `{name}` in {source_desc}")]
    MissingTensor {
        /// Full tensor name, e.g. `encoder.layers.0.self_attn.in_proj_weight`.
        name: String,
        /// Where it was looked for (file names).
        source_desc: String,
    },
    /// A weight tensor exists but has the wrong shape.
    #[error("tensor `{name}` in {source_desc} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// Full tensor name.
        name: String,
        /// Where it was found (file names).
        source_desc: String,
        /// The shape the model config implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// A position index is beyond what a positional encoding supports.
    #[error("position {position} is out of range: {what} supports at most {max} positions")]
    PositionOutOfRange {
        /// Which encoding.
        what: String,
        /// The largest position requested.
        position: usize,
        /// The number of positions supported.
        max: usize,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Any other invalid argument.
    #[error("{0}")]
    Invalid(String),
    /// An error from the tensor engine.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result alias used throughout ferroformer.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            param: param.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, found: &[usize]) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            found: found.to_vec(),
        }
    }

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Error::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
