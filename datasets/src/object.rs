//! Datasets in object storage, behind a synchronous byte-range trait.
//!
//! `datasets` stays free of async runtimes and sockets: it defines
//! [`ObjectSource`] (list objects, read byte ranges of one object) and the
//! crate that owns the network (`storage`, over the `object_store` crate)
//! implements it. Footers are read with one suffix-sized range request (two
//! when the metadata is larger than [`FOOTER_PREFETCH`]); a row group is read
//! with one batch of range requests covering only the column chunks of the
//! projected columns ([`SparseChunks`]), which the Parquet decoder then reads
//! from memory.
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::FOOTER_SIZE;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{DatasetError, Result};

/// Opens the store of an object-store URL: returns the store and the key
/// the URL names inside it. `datasets` has no network code of its own; the
/// crate that has (`storage`) registers its opener once per process with
/// [`register_store_opener`], and from then on [`crate::Dataset::open`]
/// accepts URLs (`s3://bucket/prefix/`) wherever it accepts paths.
pub type StoreOpener = fn(&str) -> std::io::Result<(Arc<dyn ObjectSource>, String)>;

static STORE_OPENER: std::sync::OnceLock<StoreOpener> = std::sync::OnceLock::new();

/// Registers the process's [`StoreOpener`]; returns `false` if one was
/// registered already (the first one stays).
pub fn register_store_opener(opener: StoreOpener) -> bool {
    STORE_OPENER.set(opener).is_ok()
}

/// The registered [`StoreOpener`], if any.
pub fn store_opener() -> Option<StoreOpener> {
    STORE_OPENER.get().copied()
}

/// Whether `text` is a URL (`scheme://...`, the scheme made of letters,
/// digits, `+`, `-` or `.`) rather than a local path.
pub fn is_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme.starts_with(|first: char| first.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// How many bytes at the end of an object are fetched to find its footer:
/// enough for the metadata of files with hundreds of row groups in one
/// request.
pub const FOOTER_PREFETCH: u64 = 64 * 1024;

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key inside its store (no leading `/`).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A store of objects that can be listed and read by byte ranges, without
/// async code. Errors are `std::io::Error`s whose message names the store,
/// the object and what went wrong (the implementation's job).
pub trait ObjectSource: Send + Sync + fmt::Debug {
    /// The store as a URL prefix, e.g. `s3://bucket`; `url(key)` is
    /// `{base}/{key}`.
    fn base_url(&self) -> String;

    /// Every object whose key starts with `prefix`, in any order.
    fn list(&self, prefix: &str) -> std::io::Result<Vec<ObjectInfo>>;

    /// The size of one object.
    fn size(&self, key: &str) -> std::io::Result<u64>;

    /// The bytes of each range of one object, in the order given. An
    /// implementation may merge nearby ranges into fewer requests.
    fn read_ranges(&self, key: &str, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>>;

    /// The URL of an object of this store.
    fn url(&self, key: &str) -> String {
        format!("{}/{}", self.base_url().trim_end_matches('/'), key)
    }
}

/// Where one object of a dataset lives.
#[derive(Clone)]
pub struct ObjectLocation {
    /// The store.
    pub source: Arc<dyn ObjectSource>,
    /// The key inside the store.
    pub key: String,
}

impl fmt::Debug for ObjectLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.source.url(&self.key))
    }
}

impl ObjectLocation {
    /// The object's URL, used as its path in errors and reports.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.source.url(&self.key))
    }

    fn open_error(&self, source: std::io::Error) -> DatasetError {
        DatasetError::Open {
            path: self.path(),
            source,
        }
    }

    fn parquet_error(&self, message: impl fmt::Display) -> DatasetError {
        DatasetError::Parquet {
            path: self.path(),
            message: message.to_string(),
        }
    }

    /// Reads and parses the footer of an object of `size` bytes.
    pub fn read_footer(&self, size: u64) -> Result<ArrowReaderMetadata> {
        let footer = FOOTER_SIZE as u64;
        if size < footer {
            return Err(self.parquet_error(format!(
                "{size} bytes is too small for a Parquet file (at least {footer})"
            )));
        }
        let tail_start = size.saturating_sub(FOOTER_PREFETCH);
        let tail = self
            .source
            .read_ranges(&self.key, std::slice::from_ref(&(tail_start..size)))
            .map_err(|error| self.open_error(error))?
            .pop()
            .unwrap_or_default();
        if tail.len() as u64 != size - tail_start {
            return Err(self.parquet_error(format!(
                "asked for {} bytes at the end, got {}",
                size - tail_start,
                tail.len()
            )));
        }
        let last: [u8; FOOTER_SIZE] = tail[tail.len() - FOOTER_SIZE..]
            .try_into()
            .expect("the tail holds the footer");
        let footer_tail = FooterTail::try_new(&last).map_err(|error| self.parquet_error(error))?;
        let metadata_length = footer_tail.metadata_length() as u64;
        if metadata_length + footer > size {
            return Err(self.parquet_error(format!(
                "the footer gives {metadata_length} bytes of metadata, more than the file's {size} bytes"
            )));
        }
        let metadata_start = size - footer - metadata_length;
        let metadata_bytes = if metadata_start >= tail_start {
            let from = (metadata_start - tail_start) as usize;
            tail.slice(from..tail.len() - FOOTER_SIZE)
        } else {
            self.source
                .read_ranges(
                    &self.key,
                    std::slice::from_ref(&(metadata_start..size - footer)),
                )
                .map_err(|error| self.open_error(error))?
                .pop()
                .unwrap_or_default()
        };
        let metadata: ParquetMetaData = ParquetMetaDataReader::decode_metadata(&metadata_bytes)
            .map_err(|error| self.parquet_error(error))?;
        ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
            .map_err(|error| self.parquet_error(error))
    }

    /// Fetches the column chunks of `row_group` selected by `mask`, in one
    /// batch of range requests, as a [`ChunkReader`] the decoder reads from.
    pub fn fetch_row_group(
        &self,
        metadata: &ArrowReaderMetadata,
        row_group: usize,
        mask: &ProjectionMask,
        size: u64,
    ) -> Result<SparseChunks> {
        let group = metadata.metadata().row_group(row_group);
        let ranges: Vec<Range<u64>> = group
            .columns()
            .iter()
            .enumerate()
            .filter(|(index, _)| mask.leaf_included(*index))
            .map(|(_, column)| {
                let (start, length) = column.byte_range();
                start..start + length
            })
            .collect();
        if let Some(bad) = ranges.iter().find(|range| range.end > size) {
            return Err(self.parquet_error(format!(
                "row group {row_group}: a column chunk ends at byte {}, past the end ({size})",
                bad.end
            )));
        }
        let chunks = self
            .source
            .read_ranges(&self.key, &ranges)
            .map_err(|error| self.open_error(error))?;
        let mut pieces: Vec<(u64, Bytes)> =
            ranges.iter().map(|range| range.start).zip(chunks).collect();
        pieces.sort_by_key(|(start, _)| *start);
        Ok(SparseChunks { size, pieces })
    }
}

/// Byte ranges of one file held in memory: what the Parquet decoder reads
/// a row group from. Reading outside the ranges is an error (it would mean
/// the decoder wants bytes that were not fetched).
#[derive(Clone, Debug)]
pub struct SparseChunks {
    size: u64,
    pieces: Vec<(u64, Bytes)>,
}

impl SparseChunks {
    /// A file of `size` bytes of which `pieces` (start offset, bytes) are held.
    pub fn new(size: u64, mut pieces: Vec<(u64, Bytes)>) -> Self {
        pieces.sort_by_key(|(start, _)| *start);
        Self { size, pieces }
    }

    /// How many bytes are held.
    pub fn held_bytes(&self) -> u64 {
        self.pieces
            .iter()
            .map(|(_, bytes)| bytes.len() as u64)
            .sum()
    }

    /// The bytes from `start` to the end of the piece holding it.
    fn from(&self, start: u64) -> parquet::errors::Result<Bytes> {
        for (piece_start, bytes) in self.pieces.iter().rev() {
            if *piece_start <= start && start <= piece_start + bytes.len() as u64 {
                return Ok(bytes.slice((start - piece_start) as usize..));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "byte {start} was not fetched (a read outside the column chunks of the row group)"
        )))
    }
}

impl Length for SparseChunks {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for SparseChunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(bytes::Buf::reader(self.from(start)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let rest = self.from(start)?;
        if rest.len() < length {
            return Err(parquet::errors::ParquetError::General(format!(
                "bytes {start}..{} were not fetched",
                start + length as u64
            )));
        }
        Ok(rest.slice(..length))
    }
}

/// Reads every byte of one object (small objects: checkpoints, specs).
pub fn read_whole(source: &dyn ObjectSource, key: &str) -> std::io::Result<Vec<u8>> {
    let size = source.size(key)?;
    let mut bytes = Vec::with_capacity(size as usize);
    for piece in source.read_ranges(key, std::slice::from_ref(&(0..size)))? {
        bytes.extend_from_slice(&piece);
    }
    Ok(bytes)
}

/// Reads every byte of the object at `url` through the registered
/// [`StoreOpener`] (checkpoints given as URLs); the errors name the URL.
pub fn read_url(url: &str) -> std::io::Result<Vec<u8>> {
    let (source, key) = open_url(url)?;
    read_whole(source.as_ref(), &key)
}

/// The size of the object at `url`, through the registered [`StoreOpener`]:
/// a cheap check that it exists and can be reached.
pub fn url_size(url: &str) -> std::io::Result<u64> {
    let (source, key) = open_url(url)?;
    source.size(&key)
}

fn open_url(url: &str) -> std::io::Result<(Arc<dyn ObjectSource>, String)> {
    let opener = store_opener().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "{url}: object-store URLs need a store opener (the storage crate registers one)"
            ),
        )
    })?;
    opener(url)
}

/// Expands keys, prefixes and glob patterns of one store into the ordered
/// list of Parquet objects, the way local paths are expanded: a key ending
/// in `/` (or naming no object but a prefix) is a directory searched for
/// `*.parquet` objects; a pattern with `*`, `?` or `[` matches keys; the
/// order is that of the path components, as for local directories.
pub fn expand_keys(source: &dyn ObjectSource, inputs: &[String]) -> Result<Vec<ObjectInfo>> {
    let mut found: Vec<ObjectInfo> = Vec::new();
    for input in inputs {
        let input = input.trim_start_matches('/');
        let open_error = |error: std::io::Error| DatasetError::Open {
            path: PathBuf::from(source.url(input)),
            source: error,
        };
        let mut matches: Vec<ObjectInfo> = if input.contains(['*', '?', '[']) {
            let pattern = glob::Pattern::new(input).map_err(|error| DatasetError::BadGlob {
                pattern: source.url(input),
                message: error.to_string(),
            })?;
            let literal = input
                .find(['*', '?', '['])
                .map(|at| &input[..at])
                .unwrap_or(input);
            let prefix = &literal[..literal.rfind('/').map(|at| at + 1).unwrap_or(0)];
            let options = glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: false,
            };
            source
                .list(prefix)
                .map_err(open_error)?
                .into_iter()
                .filter(|object| pattern.matches_with(&object.key, options))
                .collect()
        } else if input.is_empty() || input.ends_with('/') {
            parquet_under(source.list(input).map_err(open_error)?)
        } else {
            let listed = source.list(input).map_err(open_error)?;
            if let Some(object) = listed.iter().find(|object| object.key == input) {
                vec![object.clone()]
            } else {
                let directory = format!("{input}/");
                let under: Vec<ObjectInfo> = listed
                    .into_iter()
                    .filter(|object| object.key.starts_with(&directory))
                    .collect();
                if under.is_empty() {
                    // Neither an object nor a prefix: reading it names the problem.
                    let size = source.size(input).map_err(open_error)?;
                    vec![ObjectInfo {
                        key: input.to_string(),
                        size,
                    }]
                } else {
                    parquet_under(under)
                }
            }
        };
        matches.sort_by(|a, b| a.key.split('/').cmp(b.key.split('/')));
        found.extend(matches);
    }
    let mut unique: Vec<ObjectInfo> = Vec::with_capacity(found.len());
    for object in found {
        if !unique.iter().any(|seen| seen.key == object.key) {
            unique.push(object);
        }
    }
    if unique.is_empty() {
        let what: Vec<String> = inputs.iter().map(|input| source.url(input)).collect();
        return Err(DatasetError::NoFiles {
            what: what.join(" "),
        });
    }
    Ok(unique)
}

fn parquet_under(objects: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
    objects
        .into_iter()
        .filter(|object| {
            std::path::Path::new(&object.key)
                .extension()
                .is_some_and(|extension| extension.eq_ignore_ascii_case("parquet"))
        })
        .collect()
}
