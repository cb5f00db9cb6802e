//! storage: datasets and checkpoints in object storage (S3 and
//! S3-compatible stores, Google Cloud Storage, Azure Blob Storage, and
//! `file://`), through the `object_store` crate.
//!
//! - [`Store`] is one bucket with a blocking API (its requests run on a
//!   small runtime of its own) and implements [`datasets::ObjectSource`],
//!   so `datasets` plans from footers and reads only the column chunks it
//!   needs, with range requests, without async code of its own.
//! - [`open_dataset`] opens a job's data from local paths or URLs;
//!   [`read`] and [`write_atomic`] move checkpoints and reports to and
//!   from a local path or a URL with the same atomicity (readers see the
//!   old object or the whole new one).
#![forbid(unsafe_code)]

pub mod error;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datasets::Dataset;

pub use error::{Result, StorageError};
pub use store::{RequestSettings, Store};

/// Whether `location` is a URL (`scheme://...`) rather than a local path;
/// [`Store::from_url`] says which schemes it knows.
pub fn is_url(location: &str) -> bool {
    datasets::object::is_url(location)
}

fn open_store(url: &str) -> std::io::Result<(Arc<dyn datasets::ObjectSource>, String)> {
    let (store, key) = Store::from_url(url).map_err(StorageError::into_io)?;
    Ok((Arc::new(store), key))
}

/// Registers this crate as the process's opener of object-store URLs for
/// `datasets`, so that every `Dataset::open` (the CLI's, the coordinator's,
/// the workers') accepts `s3://`, `gs://`, `az://` and `file://` URLs. The
/// binary calls it at start; [`open_dataset`] calls it too. Idempotent.
pub fn register() {
    datasets::object::register_store_opener(open_store);
}

/// `location` followed by `name`: a path join for local paths, `/name`
/// appended for URLs.
pub fn join(location: &str, name: &str) -> String {
    if is_url(location) {
        format!("{}/{name}", location.trim_end_matches('/'))
    } else {
        Path::new(location).join(name).display().to_string()
    }
}

/// Opens a dataset given as local paths (files, directories, globs) or as
/// URLs of one store (objects, prefixes, globs). The fingerprint, and so
/// the sample order, depends only on the files' names, sizes and footers:
/// the same files give the same plan locally and in any store.
pub fn open_dataset<P: AsRef<Path>>(inputs: &[P]) -> Result<Dataset> {
    register();
    Ok(Dataset::open(inputs)?)
}

/// Checks, before a long job writes there, that the store of `location`
/// answers and its bucket exists ([`Store::check`]); a local path is
/// always accepted (its folders are created when written).
pub fn check_location(location: &str) -> Result<()> {
    if !is_url(location) {
        return Ok(());
    }
    let (store, key) = Store::from_url(location)?;
    store.check(&key)
}

/// The whole content of a local file or an object.
pub fn read(location: &str) -> Result<Vec<u8>> {
    if is_url(location) {
        let (store, key) = Store::from_url(location)?;
        Ok(store.get(&key)?.to_vec())
    } else {
        std::fs::read(location).map_err(|source| StorageError::Local {
            path: location.to_string(),
            source,
        })
    }
}

/// Writes `bytes` to a local file or an object so that a reader never sees
/// a partial write: locally a temporary file in the same directory, synced,
/// then renamed (the parent directories are created); in a store
/// [`Store::put_atomic`].
pub fn write_atomic(location: &str, bytes: Vec<u8>) -> Result<()> {
    if is_url(location) {
        let (store, key) = Store::from_url(location)?;
        return store.put_atomic(&key, Bytes::from(bytes));
    }
    let local = |source: std::io::Error| StorageError::Local {
        path: location.to_string(),
        source,
    };
    let path = Path::new(location);
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(local)?;
    }
    let mut random = [0u8; 6];
    getrandom::fill(&mut random)
        .map_err(|error| local(std::io::Error::other(error.to_string())))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", hex::encode(random)));
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(local)
}
