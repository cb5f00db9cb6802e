//! Opening a dataset: expanding paths, directories and globs into Parquet
//! files, reading their footers, and computing the dataset's fingerprint
//! from that metadata alone.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::object::{ObjectLocation, ObjectSource, expand_keys, is_url, store_opener};

/// What identifies a dataset's content for planning: its files (by name,
/// in order), their sizes, the row counts of their row groups, and the
/// schema. Two datasets with the same fingerprint get the same sample
/// order. Paths are reduced to file names so that the same files mounted
/// at different places on coordinator and workers agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// SHA-256 (hex) of everything below, in a canonical text form.
    pub hash: String,
    /// The files, in dataset order.
    pub files: Vec<FileFingerprint>,
    /// The Arrow schema, one `name: type` per field, in a canonical form.
    pub schema: Vec<String>,
}

/// One file's part of a [`Fingerprint`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// The file name (last path component).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The number of rows of each of its row groups.
    pub row_groups: Vec<u64>,
}

impl Fingerprint {
    /// Builds a fingerprint (computing its hash) from files and schema lines.
    pub fn new(files: Vec<FileFingerprint>, schema: Vec<String>) -> Self {
        let mut text = String::from("shoal-dataset-fingerprint-v1\n");
        for file in &files {
            text.push_str(&format!("file {:?} {}", file.name, file.size));
            for rows in &file.row_groups {
                text.push_str(&format!(" {rows}"));
            }
            text.push('\n');
        }
        for field in &schema {
            text.push_str(&format!("field {field}\n"));
        }
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        Self {
            hash,
            files,
            schema,
        }
    }

    /// The total number of rows (samples).
    pub fn samples(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|file| file.row_groups.iter())
            .sum()
    }

    /// The total number of row groups.
    pub fn row_group_count(&self) -> usize {
        self.files.iter().map(|file| file.row_groups.len()).sum()
    }

    /// Whether the stored hash matches the content (after deserializing).
    pub fn is_consistent(&self) -> bool {
        Self::new(self.files.clone(), self.schema.clone()).hash == self.hash
    }

    /// The first 64 bits of the hash, used to key the shuffles.
    pub fn key(&self) -> u64 {
        let bytes = hex::decode(&self.hash).unwrap_or_default();
        let mut word = [0u8; 8];
        for (slot, byte) in word.iter_mut().zip(bytes.iter()) {
            *slot = *byte;
        }
        u64::from_le_bytes(word)
    }
}

/// A canonical, version-independent rendering of an Arrow type.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::List(field) => format!("list<{}>", type_name(field.data_type())),
        DataType::LargeList(field) => format!("large_list<{}>", type_name(field.data_type())),
        DataType::FixedSizeList(field, size) => {
            format!("fixed_size_list<{}>[{size}]", type_name(field.data_type()))
        }
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|field| format!("{}: {}", field.name(), type_name(field.data_type())))
                .collect();
            format!("struct<{}>", inner.join(", "))
        }
        DataType::Float16 => "float16".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Boolean => "bool".into(),
        DataType::Utf8 => "string".into(),
        DataType::LargeUtf8 => "large_string".into(),
        DataType::Binary => "binary".into(),
        other => format!("{other}"),
    }
}

fn schema_lines(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|field| format!("{}: {}", field.name(), type_name(field.data_type())))
        .collect()
}

/// One Parquet file of a dataset, with its footer already parsed.
#[derive(Clone, Debug)]
pub struct DataFile {
    path: PathBuf,
    size: u64,
    metadata: ArrowReaderMetadata,
    /// Set when the file is an object of a store rather than a local file.
    object: Option<ObjectLocation>,
}

impl DataFile {
    /// Opens `path` and parses its footer.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| DatasetError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| DatasetError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|error| {
                DatasetError::Parquet {
                    path: path.to_path_buf(),
                    message: error.to_string(),
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            size,
            metadata,
            object: None,
        })
    }

    /// Opens the object `key` of `source` (of `size` bytes) and parses its
    /// footer with one or two range requests. Its path is its URL.
    pub fn open_object(source: Arc<dyn ObjectSource>, key: &str, size: u64) -> Result<Self> {
        let location = ObjectLocation {
            source,
            key: key.to_string(),
        };
        let metadata = location.read_footer(size)?;
        Ok(Self {
            path: location.path(),
            size,
            metadata,
            object: Some(location),
        })
    }

    /// Where the file lives when it is an object of a store.
    pub fn object(&self) -> Option<&ObjectLocation> {
        self.object.as_ref()
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The parsed footer (Parquet metadata and Arrow schema).
    pub fn metadata(&self) -> &ArrowReaderMetadata {
        &self.metadata
    }

    /// The Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        self.metadata.schema()
    }

    /// Row counts of the row groups.
    pub fn row_groups(&self) -> Vec<u64> {
        self.metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|group| group.num_rows().max(0) as u64)
            .collect()
    }

    fn fingerprint(&self) -> FileFingerprint {
        let name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        FileFingerprint {
            name,
            size: self.size,
            row_groups: self.row_groups(),
        }
    }
}

/// A dataset: one or more Parquet files sharing one schema, in a fixed
/// order. Samples are rows, numbered from 0 across the files in order.
#[derive(Clone, Debug)]
pub struct Dataset {
    files: Vec<DataFile>,
    schema: SchemaRef,
    fingerprint: Fingerprint,
    layout: Arc<crate::plan::Layout>,
}

impl Dataset {
    /// Opens the dataset made of `inputs`: each is a Parquet file, a
    /// directory (searched recursively for `*.parquet`, in sorted order) or a
    /// glob pattern (matches in sorted order). Files found twice are kept
    /// once, at their first place.
    ///
    /// Inputs may instead all be URLs of one object store (`s3://bucket/prefix/`)
    /// once a [`crate::object::StoreOpener`] is registered (the `storage`
    /// crate does it); see [`Dataset::open_objects`].
    pub fn open<P: AsRef<Path>>(inputs: &[P]) -> Result<Self> {
        let texts: Vec<String> = inputs
            .iter()
            .map(|input| input.as_ref().to_string_lossy().into_owned())
            .collect();
        if let Some(first) = texts.iter().find(|text| is_url(text)) {
            return Self::open_urls(first, &texts);
        }
        let paths = expand_inputs(inputs)?;
        let mut files = Vec::with_capacity(paths.len());
        for path in &paths {
            files.push(DataFile::open(path)?);
        }
        Self::from_files(files)
    }

    fn open_urls(first: &str, texts: &[String]) -> Result<Self> {
        let open_error = |url: &str, source: std::io::Error| DatasetError::Open {
            path: PathBuf::from(url),
            source,
        };
        let opener = store_opener().ok_or_else(|| {
            open_error(
                first,
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "object-store URLs need a store opener (the storage crate registers one)",
                ),
            )
        })?;
        let (source, _) = opener(first).map_err(|error| open_error(first, error))?;
        let mut keys = Vec::with_capacity(texts.len());
        for text in texts {
            if !is_url(text) {
                return Err(open_error(
                    text,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a dataset's paths are either all local or all URLs of one store",
                    ),
                ));
            }
            let (other, key) = opener(text).map_err(|error| open_error(text, error))?;
            if other.base_url() != source.base_url() {
                return Err(open_error(
                    text,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "a dataset's URLs must all be in one store (the first is in {})",
                            source.base_url()
                        ),
                    ),
                ));
            }
            keys.push(key);
        }
        Self::open_objects(source, &keys)
    }

    /// Opens the dataset made of `inputs` in one object store: each is an
    /// object key, a prefix (a "directory", searched for `*.parquet` objects)
    /// or a glob pattern, ordered as local files are (see
    /// [`crate::object::expand_keys`]). The fingerprint depends on object
    /// names, sizes and footers only, so the same files give the same
    /// fingerprint, and sample order, locally and in the store.
    pub fn open_objects(source: Arc<dyn ObjectSource>, inputs: &[String]) -> Result<Self> {
        let objects = expand_keys(source.as_ref(), inputs)?;
        let mut files = Vec::with_capacity(objects.len());
        for object in &objects {
            files.push(DataFile::open_object(
                source.clone(),
                &object.key,
                object.size,
            )?);
        }
        Self::from_files(files)
    }

    /// Builds a dataset from files already opened.
    pub fn from_files(files: Vec<DataFile>) -> Result<Self> {
        let first = files.first().ok_or_else(|| DatasetError::NoFiles {
            what: "(no paths)".into(),
        })?;
        let schema = first.schema().clone();
        let expected = schema_lines(&schema);
        for file in &files[1..] {
            let found = schema_lines(file.schema());
            if found != expected {
                return Err(DatasetError::SchemaMismatch {
                    path: file.path.clone(),
                    first: first.path.clone(),
                    expected: expected.join(", "),
                    found: found.join(", "),
                });
            }
        }
        let fingerprint =
            Fingerprint::new(files.iter().map(DataFile::fingerprint).collect(), expected);
        if fingerprint.samples() == 0 {
            return Err(DatasetError::NoRows { files: files.len() });
        }
        let layout = Arc::new(crate::plan::Layout::new(&fingerprint));
        Ok(Self {
            files,
            schema,
            fingerprint,
            layout,
        })
    }

    /// The files, in dataset order.
    pub fn files(&self) -> &[DataFile] {
        &self.files
    }

    /// The shared Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The fingerprint (computed from footers only).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Where each sample lives.
    pub fn layout(&self) -> &crate::plan::Layout {
        &self.layout
    }

    /// The number of samples (rows).
    pub fn samples(&self) -> u64 {
        self.fingerprint.samples()
    }
}

fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

fn is_parquet_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("parquet"))
}

fn walk_directory(directory: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(directory).map_err(|source| DatasetError::Open {
        path: directory.to_path_buf(),
        source,
    })?;
    let mut children = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DatasetError::Open {
            path: directory.to_path_buf(),
            source,
        })?;
        children.push(entry.path());
    }
    children.sort();
    for child in children {
        if child.is_dir() {
            walk_directory(&child, found)?;
        } else if is_parquet_name(&child) {
            found.push(child);
        }
    }
    Ok(())
}

/// Expands paths, directories and globs into the ordered list of files.
pub fn expand_inputs<P: AsRef<Path>>(inputs: &[P]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for input in inputs {
        let input = input.as_ref();
        let text = input.to_string_lossy();
        if !input.exists() && is_glob(&text) {
            let matches = glob::glob(&text).map_err(|error| DatasetError::BadGlob {
                pattern: text.to_string(),
                message: error.to_string(),
            })?;
            let mut paths = Vec::new();
            for entry in matches {
                let path = entry.map_err(|error| DatasetError::Open {
                    path: error.path().to_path_buf(),
                    source: std::io::Error::other(error.to_string()),
                })?;
                if path.is_dir() {
                    walk_directory(&path, &mut paths)?;
                } else {
                    paths.push(path);
                }
            }
            paths.sort();
            found.extend(paths);
        } else if input.is_dir() {
            walk_directory(input, &mut found)?;
        } else {
            // A plain file: opened later, which reports a missing one.
            found.push(input.to_path_buf());
        }
    }
    let mut unique = Vec::with_capacity(found.len());
    for path in found {
        if !unique.contains(&path) {
            unique.push(path);
        }
    }
    if unique.is_empty() {
        let what: Vec<String> = inputs
            .iter()
            .map(|input| input.as_ref().display().to_string())
            .collect();
        return Err(DatasetError::NoFiles {
            what: what.join(" "),
        });
    }
    Ok(unique)
}
