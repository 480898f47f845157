//! The crate's one error type and its mapping to gRPC status codes.

use tonic::Status;

/// Everything that can go wrong in berth-content.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A blob, ingest or image record does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request itself is wrong (bad digest, offset, tarball, change...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is fine but the state does not allow it (a locked ref, a
    /// missing target blob).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata store: {0}")]
    Db(Box<redb::Error>),
    /// Any other internal failure.
    #[error("{0}")]
    Internal(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A [`Error::NotFound`].
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

/// Converts any redb error into [`Error::Db`].
pub(crate) fn db<E: Into<redb::Error>>(e: E) -> Error {
    Error::Db(Box::new(e.into()))
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Db(Box::new(e))
    }
}

/// Adds context to I/O results.
pub(crate) trait IoContext<T> {
    /// Wraps an I/O error with `what`.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::Io { .. } | Error::Db(_) | Error::Internal(_) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal(msg)
            }
        }
    }
}
