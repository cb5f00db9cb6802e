//! The crate's one error type, each variant naming the URL and what to do.

/// An error of the `storage` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A location is neither a local path nor a URL of a supported store.
    #[error("bad storage location {location:?}: {message}")]
    BadLocation {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        message: String,
    },
    /// The store could not be configured (credentials, region, endpoint).
    #[error("cannot configure the store of {url}: {message}")]
    Configuration {
        /// The URL.
        url: String,
        /// What the store's builder reported.
        message: String,
    },
    /// The bucket (or container) does not exist.
    #[error(
        "{url}: bucket {bucket:?} does not exist at {endpoint} (create it, or check the bucket name and AWS_ENDPOINT_URL / AWS_REGION)"
    )]
    NoSuchBucket {
        /// The URL.
        url: String,
        /// The bucket.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
    },
    /// The object does not exist.
    #[error("{url}: no such object")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// The credentials were refused.
    #[error(
        "{url}: access denied ({message}); check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://)"
    )]
    AccessDenied {
        /// The URL.
        url: String,
        /// What the store answered.
        message: String,
    },
    /// The endpoint could not be reached.
    #[error(
        "{url}: cannot reach the store at {endpoint} ({message}); check AWS_ENDPOINT_URL and the network"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// The endpoint asked.
        endpoint: String,
        /// The underlying error.
        message: String,
    },
    /// Any other failure of a request.
    #[error("{url}: {operation} failed: {message}")]
    Request {
        /// The URL.
        url: String,
        /// What was being done (read, write, list, ...).
        operation: &'static str,
        /// The store's error.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Local {
        /// The path.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The dataset of a job could not be opened or read (boxed: dataset
    /// errors are large).
    #[error(transparent)]
    Dataset(Box<datasets::DatasetError>),
}

impl From<datasets::DatasetError> for StorageError {
    fn from(error: datasets::DatasetError) -> StorageError {
        StorageError::Dataset(Box::new(error))
    }
}

impl StorageError {
    /// The `std::io::ErrorKind` closest to this error, for
    /// [`datasets::ObjectSource`], whose errors are `std::io::Error`s.
    pub fn io_kind(&self) -> std::io::ErrorKind {
        match self {
            Self::NotFound { .. } | Self::NoSuchBucket { .. } => std::io::ErrorKind::NotFound,
            Self::AccessDenied { .. } => std::io::ErrorKind::PermissionDenied,
            Self::Unreachable { .. } => std::io::ErrorKind::ConnectionRefused,
            Self::BadLocation { .. } | Self::Configuration { .. } => {
                std::io::ErrorKind::InvalidInput
            }
            _ => std::io::ErrorKind::Other,
        }
    }

    /// This error as a `std::io::Error` (its message kept whole).
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::new(self.io_kind(), self)
    }
}

/// The crate's result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
