//! The one typed error of the core. The Python adapter maps [`ErrorKind`] to exception types
//! in one place (python/src/errors.rs).
#![forbid(unsafe_code)]

use std::fmt;

/// What kind of failure, which decides the Python exception type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A parameter the user passed is out of range or malformed (`ValueError`).
    InvalidArgument,
    /// The user passed the wrong type (`TypeError`).
    InvalidType,
    /// The platform or environment cannot provide the feature (`RuntimeError`).
    Unsupported,
    /// An OS call failed: open, mmap, fallocate, permissions (`OSError`).
    Io,
    /// Shared memory was found corrupt and could not be repaired (`RuntimeError`).
    Corrupt,
    /// Not enough space or memory for what was asked (`MemoryError` / `OSError`).
    NoSpace,
}

/// A typed error with a message that tells the user what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The OS error number, when an OS call failed.
    pub os_errno: Option<i32>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            os_errno: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn io(context: impl fmt::Display, err: &std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            message: format!("{context}: {err}"),
            os_errno: err.raw_os_error(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
