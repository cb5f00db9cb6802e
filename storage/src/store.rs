//! One bucket (or container, or the local file system) of an object store,
//! with a blocking API over the async `object_store` crate.
//!
//! Requests run on a small tokio runtime owned by this module (two threads,
//! started on first use); callers block on a channel, so the API works the
//! same from plain threads (the data prefetcher) and from inside another
//! runtime's tasks (where `Runtime::block_on` would panic).
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::error::{Result, StorageError};

/// Objects larger than this are uploaded in parts of this size.
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// The schemes [`Store::from_url`] understands.
pub const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "file"];

/// reqwest is built without a bundled TLS provider: installs ring, the
/// provider QUIC already uses (one crypto stack in the binary), as the
/// process's default, unless one is installed already. Needed before any
/// store's HTTP client is built.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        install_crypto_provider();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shoal-storage")
            .enable_all()
            .build()
            .expect("start the object-storage runtime")
    })
}

/// Runs `future` on the storage runtime and waits for its result.
fn wait<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver
        .recv()
        .expect("an object-storage request panicked (see the log above)")
}

/// How requests are retried and timed out.
#[derive(Clone, Debug)]
pub struct RequestSettings {
    /// Retries of a failed request (server errors, timeouts, refused
    /// connections), with exponential backoff from 100 ms.
    pub retries: usize,
    /// No retry starts after this long since the first attempt.
    pub retry_timeout: Duration,
    /// Connecting must succeed within this.
    pub connect_timeout: Duration,
    /// One whole request must finish within this.
    pub request_timeout: Duration,
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            retries: 3,
            retry_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// One bucket of an object store (or the local file system for `file://`).
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// `scheme://bucket`, or `file://`.
    base_url: String,
    bucket: String,
    endpoint: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Store({} at {})", self.base_url, self.endpoint)
    }
}

fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(endpoint);
    let host = rest.split('/').next().unwrap_or("");
    let host = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(host, _)| host).unwrap_or(host)
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// Variables a store is configured from: the process environment by
/// default ([`Store::from_url`]), or an explicit map (tests, several
/// stores with different credentials in one process).
pub type Environment = std::collections::BTreeMap<String, String>;

/// The process environment as an [`Environment`].
pub fn process_environment() -> Environment {
    std::env::vars().collect()
}

/// A builder configured from the variables of `environment` that start
/// with `prefix` (lowercased, as the `object_store` config keys are).
fn configured<B, K: std::str::FromStr>(
    mut builder: B,
    environment: &Environment,
    prefix: &str,
    with: impl Fn(B, K, &str) -> B,
) -> B {
    for (name, value) in environment {
        if name.starts_with(prefix)
            && let Ok(key) = name.to_ascii_lowercase().parse::<K>()
        {
            builder = with(builder, key, value);
        }
    }
    builder
}

impl Store {
    /// Splits `url` (`s3://bucket/key`, `gs://...`, `az://container/...`,
    /// `file:///absolute/path`) into its store and the key inside it.
    /// Credentials, region and endpoint come from the environment as the
    /// cloud's own tools read them (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, ...; `GOOGLE_SERVICE_ACCOUNT`, ...;
    /// `AZURE_STORAGE_ACCOUNT_NAME`, ...). Plain `http://` endpoints are
    /// allowed on loopback, elsewhere only with `AWS_ALLOW_HTTP=true`.
    pub fn from_url(url: &str) -> Result<(Store, String)> {
        Self::from_url_with(url, &RequestSettings::default(), &process_environment())
    }

    /// [`Store::from_url`] with explicit request settings and variables.
    pub fn from_url_with(
        url: &str,
        settings: &RequestSettings,
        environment: &Environment,
    ) -> Result<(Store, String)> {
        let variable = |name: &str| {
            environment
                .get(name)
                .filter(|value| !value.is_empty())
                .cloned()
        };
        let bad = |message: &str| StorageError::BadLocation {
            location: url.to_string(),
            message: message.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not a URL (scheme://bucket/key)"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            let path = rest.strip_prefix('/').ok_or_else(|| {
                bad("a file:// URL needs an absolute path (file:///absolute/path)")
            })?;
            let store = Store {
                inner: Arc::new(LocalFileSystem::new()),
                base_url: "file://".to_string(),
                bucket: String::new(),
                endpoint: "the local file system".to_string(),
            };
            return Ok((store, path.to_string()));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the URL names no bucket"));
        }
        install_crypto_provider();
        let configuration = |error: object_store::Error| StorageError::Configuration {
            url: url.to_string(),
            message: error.to_string(),
        };
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: settings.retries,
            retry_timeout: settings.retry_timeout,
        };
        let client = |allow_http: bool| {
            ClientOptions::new()
                .with_connect_timeout(settings.connect_timeout)
                .with_timeout(settings.request_timeout)
                .with_allow_http(allow_http)
        };
        let (inner, endpoint): (Arc<dyn ObjectStore>, String) = match scheme.as_str() {
            "s3" | "s3a" => {
                let endpoint = variable("AWS_ENDPOINT_URL_S3")
                    .or_else(|| variable("AWS_ENDPOINT_URL"))
                    .or_else(|| variable("AWS_ENDPOINT"));
                let region = variable("AWS_REGION")
                    .or_else(|| variable("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_string());
                let allow_http_asked = variable("AWS_ALLOW_HTTP")
                    .is_some_and(|value| value.eq_ignore_ascii_case("true"));
                let mut allow_http = allow_http_asked;
                if let Some(endpoint) = &endpoint
                    && endpoint.starts_with("http://")
                {
                    if is_loopback(endpoint) {
                        allow_http = true;
                    } else if !allow_http_asked {
                        return Err(StorageError::Configuration {
                            url: url.to_string(),
                            message: format!(
                                "endpoint {endpoint} is plain HTTP on a non-loopback host; use https:// or set AWS_ALLOW_HTTP=true"
                            ),
                        });
                    }
                }
                let mut builder = configured(
                    AmazonS3Builder::new(),
                    environment,
                    "AWS_",
                    |builder, key, value| builder.with_config(key, value),
                )
                .with_bucket_name(bucket)
                .with_region(&region)
                .with_retry(retry)
                .with_client_options(client(allow_http));
                if let Some(endpoint) = &endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let store = builder.build().map_err(configuration)?;
                let endpoint =
                    endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
                (Arc::new(store), endpoint)
            }
            "gs" => {
                let store = configured(
                    GoogleCloudStorageBuilder::new(),
                    environment,
                    "GOOGLE_",
                    |builder, key, value| builder.with_config(key, value),
                )
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(client(false))
                .build()
                .map_err(configuration)?;
                (
                    Arc::new(store),
                    "https://storage.googleapis.com".to_string(),
                )
            }
            "az" | "azure" | "abfs" => {
                let store = configured(
                    MicrosoftAzureBuilder::new(),
                    environment,
                    "AZURE_",
                    |builder, key, value| builder.with_config(key, value),
                )
                .with_container_name(bucket)
                .with_retry(retry)
                .with_client_options(client(false))
                .build()
                .map_err(configuration)?;
                (Arc::new(store), "Azure Blob Storage".to_string())
            }
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?} (known: {})",
                    SCHEMES.join(", ")
                )));
            }
        };
        let store = Store {
            inner,
            base_url: format!("{scheme}://{bucket}"),
            bucket: bucket.to_string(),
            endpoint,
        };
        Ok((store, key.trim_start_matches('/').to_string()))
    }

    /// `scheme://bucket` (or `file://`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of `key`.
    pub fn url(&self, key: &str) -> String {
        if self.base_url == "file://" {
            format!("file:///{key}")
        } else {
            format!("{}/{key}", self.base_url)
        }
    }

    /// Turns an `object_store` error into one naming the URL and a likely cause.
    fn error(
        &self,
        key: &str,
        operation: &'static str,
        error: object_store::Error,
    ) -> StorageError {
        let url = self.url(key);
        // object_store's messages repeat their sources' text: keep each
        // piece of the chain once, and the innermost cause on its own.
        let mut parts = vec![error.to_string()];
        let mut root_cause = parts[0].clone();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            let text = inner.to_string();
            if !parts.iter().any(|part| part.contains(&text)) {
                parts.push(text.clone());
            }
            root_cause = text;
            source = inner.source();
        }
        let chain = parts.join(": ");
        let short: String = chain.chars().take(400).collect();
        if ["NoSuchBucket", "ContainerNotFound", "bucket does not exist"]
            .iter()
            .any(|marker| chain.contains(marker))
        {
            return StorageError::NoSuchBucket {
                url,
                bucket: self.bucket.clone(),
                endpoint: self.endpoint.clone(),
            };
        }
        match error {
            object_store::Error::NotFound { .. } => StorageError::NotFound { url },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StorageError::AccessDenied {
                url,
                message: short,
            },
            _ if [
                "error sending request",
                "Connection refused",
                "connection refused",
                "dns error",
                "timed out",
                "tcp connect error",
            ]
            .iter()
            .any(|marker| chain.contains(marker)) =>
            {
                StorageError::Unreachable {
                    url,
                    endpoint: self.endpoint.clone(),
                    message: root_cause.chars().take(200).collect(),
                }
            }
            _ if [
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
            ]
            .iter()
            .any(|marker| chain.contains(marker)) =>
            {
                StorageError::AccessDenied {
                    url,
                    message: short,
                }
            }
            _ => StorageError::Request {
                url,
                operation,
                message: short,
            },
        }
    }

    fn run<T, F>(
        &self,
        key: &str,
        operation: &'static str,
        make: impl FnOnce(Arc<dyn ObjectStore>, ObjectPath) -> F,
    ) -> Result<T>
    where
        F: Future<Output = object_store::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let path = ObjectPath::from(key);
        wait(make(self.inner.clone(), path)).map_err(|error| self.error(key, operation, error))
    }

    /// Every object whose key starts with `prefix` (a plain string prefix,
    /// not only whole directories), with sizes, sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let directory = &prefix[..prefix.rfind('/').map(|at| at + 1).unwrap_or(0)];
        let directory = directory.trim_end_matches('/').to_string();
        let inner = self.inner.clone();
        let listed = wait(async move {
            let directory = (!directory.is_empty()).then(|| ObjectPath::from(directory.as_str()));
            inner.list(directory.as_ref()).try_collect::<Vec<_>>().await
        })
        .map_err(|error| self.error(prefix, "list", error))?;
        let mut objects: Vec<(String, u64)> = listed
            .into_iter()
            .map(|meta| (meta.location.to_string(), meta.size))
            .filter(|(key, _)| key.starts_with(prefix))
            .collect();
        objects.sort();
        Ok(objects)
    }

    /// Checks that the bucket exists and answers with these credentials:
    /// one listing of the folder `key` (not recursive, so cheap in a large
    /// bucket). Says nothing of whether `key` itself exists.
    pub fn check(&self, key: &str) -> Result<()> {
        let folder = key.trim_end_matches('/').to_string();
        self.run(key, "list", |inner, _| async move {
            let folder = (!folder.is_empty()).then(|| ObjectPath::from(folder.as_str()));
            inner.list_with_delimiter(folder.as_ref()).await.map(drop)
        })
    }

    /// The size of one object.
    pub fn size(&self, key: &str) -> Result<u64> {
        let size = self.run(key, "head", |inner, path| async move {
            Ok(inner.head(&path).await?.size)
        });
        if let Err(StorageError::NotFound { .. }) = &size {
            // A HEAD answer has no body to tell a missing object from a
            // missing bucket; a listing does.
            let folder = &key[..key.rfind('/').unwrap_or(0)];
            if let Err(error @ StorageError::NoSuchBucket { .. }) = self.check(folder) {
                return Err(error);
            }
        }
        size
    }

    /// The whole object.
    pub fn get(&self, key: &str) -> Result<Bytes> {
        self.run(key, "read", |inner, path| async move {
            inner.get(&path).await?.bytes().await
        })
    }

    /// Byte ranges of one object (nearby ranges are merged into one request).
    pub fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let ranges = ranges.to_vec();
        self.run(key, "read", |inner, path| async move {
            inner.get_ranges(&path, &ranges).await
        })
    }

    /// Deletes one object.
    pub fn delete(&self, key: &str) -> Result<()> {
        self.run(key, "delete", |inner, path| async move {
            inner.delete(&path).await
        })
    }

    /// Writes `bytes` to `key` so that readers see the old object or the
    /// whole new one, never a part: the bytes go to `key.tmp-<random>` first
    /// (one request, or parts of [`MULTIPART_PART_BYTES`] when larger), which
    /// is then copied to `key` inside the store and deleted. A crash leaves
    /// at most a `.tmp-` object behind, which nothing reads.
    pub fn put_atomic(&self, key: &str, bytes: Bytes) -> Result<()> {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|error| StorageError::Request {
            url: self.url(key),
            operation: "write",
            message: format!("no randomness for a temporary name: {error}"),
        })?;
        let temporary = format!("{key}.tmp-{}", hex::encode(random));
        self.run(&temporary, "upload", |inner, path| async move {
            if bytes.len() <= MULTIPART_PART_BYTES {
                inner.put(&path, PutPayload::from(bytes)).await?;
                return Ok(());
            }
            let upload = inner.put_multipart(&path).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
            for part in bytes.chunks(MULTIPART_PART_BYTES) {
                if let Err(error) = writer.wait_for_capacity(4).await {
                    // A failed part: abort the upload so that the store
                    // drops the parts already sent (no object, no orphaned
                    // parts billed); the part's error is the one to report.
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(%abort, "aborting a failed multipart upload failed");
                    }
                    return Err(error);
                }
                writer.write(part);
            }
            // `finish` aborts the upload itself when a part or the
            // completion fails.
            writer.finish().await?;
            Ok(())
        })?;
        let from = temporary.clone();
        let published = self.run(key, "publish", |inner, path| async move {
            inner.copy(&ObjectPath::from(from.as_str()), &path).await
        });
        let removed = self.delete(&temporary);
        published?;
        if let Err(error) = removed {
            tracing::warn!("{error} (a leftover temporary object; nothing reads it)");
        }
        Ok(())
    }
}

impl datasets::ObjectSource for Store {
    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    fn url(&self, key: &str) -> String {
        Store::url(self, key)
    }

    fn list(&self, prefix: &str) -> std::io::Result<Vec<datasets::ObjectInfo>> {
        Ok(Store::list(self, prefix)
            .map_err(StorageError::into_io)?
            .into_iter()
            .map(|(key, size)| datasets::ObjectInfo { key, size })
            .collect())
    }

    fn size(&self, key: &str) -> std::io::Result<u64> {
        Store::size(self, key).map_err(StorageError::into_io)
    }

    fn read_ranges(&self, key: &str, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
        self.get_ranges(key, ranges).map_err(StorageError::into_io)
    }
}
