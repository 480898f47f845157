//! Gateway errors and their one mapping to gRPC statuses.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

pub use berth_common::EXIT_CODE_KEY;

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{message}")]
    Exec { message: String, exit_code: i64 },
    /// An error from a backing service, passed through with its code.
    #[error("{service}: {message}")]
    Service {
        service: &'static str,
        code: Code,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A registry refused the credentials or the operation.
    #[error("{0}")]
    PermissionDenied(String),
    /// A registry could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// Wraps a status from a backing service. An exec failure reported by
    /// berth-tasks keeps its exit code.
    pub(crate) fn service(service: &'static str) -> impl FnOnce(Status) -> Error {
        move |s| {
            if let Some(code) = s
                .metadata()
                .get(EXIT_CODE_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                return Error::Exec {
                    message: s.message().to_string(),
                    exit_code: code,
                };
            }
            Error::Service {
                service,
                code: s.code(),
                message: s.message().to_string(),
            }
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Internal(format!("gateway store: {e}"))
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Error::Internal(format!("gateway store: {e}")) }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(msg),
            Error::Conflict(_) => Status::already_exists(msg),
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::PermissionDenied(_) => Status::permission_denied(msg),
            Error::Unavailable(_) => Status::unavailable(msg),
            Error::Exec { exit_code, message } => {
                let mut md = MetadataMap::new();
                md.insert(EXIT_CODE_KEY, MetadataValue::from(exit_code));
                Status::with_metadata(Code::FailedPrecondition, message, md)
            }
            Error::Service {
                code:
                    code @ (Code::Unavailable | Code::Unknown | Code::Internal | Code::DeadlineExceeded),
                service,
                message,
            } => Status::new(
                code,
                format!("berth-{service} is unavailable or failed: {message}"),
            ),
            Error::Service { code, message, .. } => Status::new(code, message),
            Error::Io { .. } | Error::Internal(_) => Status::internal(msg),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
