use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Errors of berth-tasks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("task {0} already exists")]
    AlreadyExists(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The container's command could not be executed.
    #[error("{message}")]
    Exec { message: String, exit_code: i32 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// Not possible yet (a task whose state recovery has not found); retry.
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
}

/// The one place where task errors become gRPC statuses.
impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::Exec { exit_code, .. } => {
                let mut md = tonic::metadata::MetadataMap::new();
                md.insert(berth_common::EXIT_CODE_KEY, MetadataValue::from(exit_code));
                Status::with_metadata(Code::FailedPrecondition, msg, md)
            }
            Error::Unavailable(_) => Status::unavailable(msg),
            Error::Io { .. } | Error::Internal(_) => Status::internal(msg),
        }
    }
}
