//! The crate's error type and its mapping to gRPC status codes.

use tonic::{Code, Status};

/// Everything that can go wrong in berth-snapshots.
///
/// Every variant maps to exactly one gRPC code in [`From<Error> for Status`],
/// the one place where errors cross the RPC boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot key (or parent) does not exist.
    #[error("snapshot {key:?} not found")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// The parent named in Prepare/View is missing or not committed.
    #[error("parent snapshot {parent:?} not found (it must be a committed snapshot)")]
    ParentNotFound {
        /// The missing parent.
        parent: String,
    },
    /// A snapshot with this key or name already exists.
    #[error("snapshot {key:?} already exists")]
    AlreadyExists {
        /// The key in conflict.
        key: String,
    },
    /// The operation needs an active snapshot.
    #[error("snapshot {key:?} is {kind}, not active")]
    NotActive {
        /// The key.
        key: String,
        /// Its kind ("committed" or "view").
        kind: &'static str,
    },
    /// Mounts were asked for a committed snapshot.
    #[error("snapshot {key:?} is committed; prepare or view a child to mount it")]
    Committed {
        /// The key.
        key: String,
    },
    /// A committed snapshot cannot be removed while others build on it.
    #[error("snapshot {key:?} is the parent of {child:?}; remove the child first")]
    HasChildren {
        /// The parent being removed.
        key: String,
        /// One child that still references it.
        child: String,
    },
    /// A commit onto a parent other than the one the snapshot was prepared
    /// on.
    #[error(
        "snapshot {key:?} was prepared on {prepared:?} and cannot be committed onto {asked:?} \
         (only a snapshot prepared without a parent can be rebased)"
    )]
    RebaseRefused {
        /// The active snapshot.
        key: String,
        /// Its parent from Prepare.
        prepared: String,
        /// The parent asked for.
        asked: String,
    },
    /// The client's request stream broke (ApplyStream).
    #[error("the layer stream broke: {0}")]
    StreamBroken(String),
    /// Another Apply into the same snapshot is running.
    #[error("a layer is already being applied to snapshot {key:?}")]
    Busy {
        /// The key.
        key: String,
    },
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A layer entry would land outside the snapshot.
    #[error("layer entry {path} escapes the root")]
    Escape {
        /// The entry path (or hardlink target) as written in the tar.
        path: String,
    },
    /// A layer could not be unpacked (bad tar, unsupported entry, ...).
    #[error("invalid layer: {0}")]
    BadLayer(String),
    /// The blob's content does not match its descriptor.
    #[error("layer digest mismatch: descriptor says {expected}, content is {actual}")]
    DigestMismatch {
        /// Digest from the descriptor.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },
    /// berth-content answered with an error.
    #[error("reading layer {digest} from berth-content: {}", status.message())]
    Content {
        /// The blob asked for.
        digest: String,
        /// What berth-content said.
        status: Status,
    },
    /// A filesystem or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (naming the path).
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metadata store failed.
    #[error("snapshot metadata: {0}")]
    Db(String),
    /// Should not happen (a task panicked, a record is unreadable).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] with context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Io`] from a nix errno.
    pub(crate) fn errno(context: impl Into<String>, e: nix::errno::Errno) -> Self {
        Error::io(context, std::io::Error::from(e))
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound { .. } | Error::ParentNotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::NotActive { .. }
            | Error::Committed { .. }
            | Error::HasChildren { .. }
            | Error::RebaseRefused { .. }
            | Error::Busy { .. } => Code::FailedPrecondition,
            Error::StreamBroken(_) => Code::Cancelled,
            Error::InvalidArgument(_)
            | Error::Escape { .. }
            | Error::BadLayer(_)
            | Error::DigestMismatch { .. } => Code::InvalidArgument,
            // berth-content's own verdict (NotFound, Unavailable, ...).
            Error::Content { status, .. } => match status.code() {
                Code::Ok => Code::Unknown,
                c => c,
            },
            Error::Io { .. } | Error::Db(_) | Error::Internal(_) => Code::Internal,
        }
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "snapshots request failed");
        }
        Status::new(code, e.to_string())
    }
}
