//! Checkpoints and fixtures as safetensors files: parameters named as
//! PyTorch's `state_dict` keys, optimizer state under `optimizer/`, and
//! string metadata (data cursor, step, model kind, configuration as JSON).
//!
//! Encoding and decoding are pure functions on bytes ([`encode`],
//! [`decode`]); [`save`] and [`load`] add the file I/O. [`save`] is the one
//! place in `ops` that writes a file: it writes a temporary file next to the
//! target, syncs it, renames it over the target and syncs the directory, so
//! a crash leaves either the old checkpoint or the new one, never a torn one.
//! Everything read is validated: names, shapes and dtypes, with an
//! [`OpsError`] naming what is wrong.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::OpsError;
use crate::parameters::ParameterSet;
use crate::shape::{MAX_RANK, Shape};
use crate::tensor::{IndexTensor, Tensor};

/// Prefix of optimizer-state tensor names in a checkpoint.
pub const OPTIMIZER_PREFIX: &str = "optimizer/";

/// The contents of a safetensors file: f32 and i64 tensors by name, and
/// the string metadata.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    /// f32 tensors.
    pub floats: BTreeMap<String, Tensor>,
    /// i64 tensors.
    pub indices: BTreeMap<String, IndexTensor>,
    /// String metadata (`__metadata__`).
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// The f32 tensor `name`, or an error naming the file (`what`) and the tensor.
    pub fn float(&self, what: &str, name: &str) -> Result<&Tensor, OpsError> {
        self.floats
            .get(name)
            .ok_or_else(|| OpsError::MissingTensor {
                what: what.to_string(),
                name: name.to_string(),
            })
    }

    /// The metadata entry `key`, or an error naming the file and the key.
    pub fn meta(&self, what: &str, key: &str) -> Result<&str, OpsError> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| OpsError::BadMetadata {
                what: what.to_string(),
                key: key.to_string(),
                reason: "missing".to_string(),
            })
    }

    /// The optimizer-state tensors, names without the `optimizer/` prefix.
    pub fn optimizer_tensors(&self) -> Vec<(String, Tensor)> {
        self.floats
            .iter()
            .filter_map(|(name, t)| {
                name.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|n| (n.to_string(), t.clone()))
            })
            .collect()
    }
}

/// Serializes f32 tensors and metadata to safetensors bytes.
///
/// The bytes are a pure function of the input: the header lists the
/// metadata and the tensors sorted by name (the safetensors crate writes
/// its metadata from a `HashMap`, whose order changes from one process to
/// the next, so identical checkpoints would hash differently), and the data
/// follows in the same order. Any safetensors reader, PyTorch's included,
/// reads the result.
///
/// # Panics
/// When two tensors have the same name (a programming error).
pub fn encode(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, OpsError> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        panic!("checkpoint: tensor `{}` given twice", pair[0].0);
    }
    // serde_json's maps keep insertion order only with `preserve_order`;
    // write the header by hand so that the order is ours.
    let quote = |text: &str| serde_json::Value::String(text.to_string()).to_string();
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":{");
        let entries: Vec<String> = metadata
            .iter()
            .map(|(key, value)| format!("{}:{}", quote(key), quote(value)))
            .collect();
        header.push_str(&entries.join(","));
        header.push('}');
    }
    let mut offset = 0usize;
    for (index, (name, tensor)) in sorted.iter().enumerate() {
        if index > 0 || !metadata.is_empty() {
            header.push(',');
        }
        let bytes = tensor.numel() * 4;
        let shape: Vec<String> = tensor.dims().iter().map(usize::to_string).collect();
        header.push_str(&format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(name),
            shape.join(","),
            offset,
            offset + bytes
        ));
        offset += bytes;
    }
    header.push('}');
    // The data starts on an 8-byte boundary: pad the header with spaces.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, tensor) in &sorted {
        for value in tensor.data() {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    Ok(out)
}

/// Parses safetensors bytes; `what` names the source in errors. Accepts
/// f32 and i64 tensors of at most four dimensions.
pub fn decode(bytes: &[u8], what: &str) -> Result<TensorFile, OpsError> {
    let malformed = |message: String| OpsError::Safetensors {
        what: what.to_string(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| malformed(e.to_string()))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| malformed(e.to_string()))?;
    let mut out = TensorFile {
        metadata: header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        ..TensorFile::default()
    };
    for (name, view) in file.iter() {
        let dims = view.shape();
        if dims.len() > MAX_RANK {
            return Err(OpsError::InvalidShape {
                shape: dims.to_vec(),
                reason: format!("{what}: tensor `{name}` has more than {MAX_RANK} dimensions"),
            });
        }
        let shape = Shape::new(dims);
        match view.dtype() {
            Dtype::F32 => {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                out.floats
                    .insert(name.to_string(), Tensor::from_vec(shape, data));
            }
            Dtype::I64 => {
                let data = view
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8-byte chunk")))
                    .collect();
                out.indices
                    .insert(name.to_string(), IndexTensor::from_vec(shape, data));
            }
            other => {
                return Err(OpsError::DtypeMismatch {
                    what: what.to_string(),
                    name: name.to_string(),
                    expected: "F32 or I64".to_string(),
                    found: format!("{other:?}"),
                });
            }
        }
    }
    Ok(out)
}

/// The tensors of a checkpoint: the parameters under their own names, the
/// optimizer state (names as [`crate::Optimizer::state_tensors`] gives
/// them) under `optimizer/`.
pub fn checkpoint_tensors(
    params: &ParameterSet,
    optimizer_state: &[(String, Tensor)],
) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|(name, t)| (name.to_string(), t.detach()))
        .chain(
            optimizer_state
                .iter()
                .map(|(name, t)| (format!("{OPTIMIZER_PREFIX}{name}"), t.clone())),
        )
        .collect()
}

/// Replaces the values of `params` with the file's tensors of the same
/// names, after checking that every parameter is present with its shape
/// and that the file has no other tensor outside `optimizer/`.
pub fn load_parameters(
    file: &TensorFile,
    what: &str,
    params: &mut ParameterSet,
) -> Result<(), OpsError> {
    let mut values = Vec::with_capacity(params.len());
    for (name, current) in params.iter() {
        let tensor = match file.floats.get(name) {
            Some(t) => t,
            None if file.indices.contains_key(name) => {
                return Err(OpsError::DtypeMismatch {
                    what: what.to_string(),
                    name: name.to_string(),
                    expected: "F32".to_string(),
                    found: "I64".to_string(),
                });
            }
            None => {
                return Err(OpsError::MissingTensor {
                    what: what.to_string(),
                    name: name.to_string(),
                });
            }
        };
        if tensor.shape() != current.shape() {
            return Err(OpsError::ShapeMismatch {
                what: what.to_string(),
                name: name.to_string(),
                expected: current.dims().to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        values.push(tensor.clone());
    }
    let unknown = file
        .floats
        .keys()
        .chain(file.indices.keys())
        .find(|n| !n.starts_with(OPTIMIZER_PREFIX) && params.index_of(n).is_none());
    if let Some(name) = unknown {
        return Err(OpsError::BadMetadata {
            what: what.to_string(),
            key: name.clone(),
            reason: "tensor is not a parameter of this model".to_string(),
        });
    }
    for (index, value) in values.into_iter().enumerate() {
        params.replace(index, value);
    }
    Ok(())
}

/// Writes a checkpoint of `params`, `optimizer_state` and `metadata` to
/// `path` atomically (temporary file, sync, rename, directory sync).
pub fn save(
    path: &Path,
    params: &ParameterSet,
    optimizer_state: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), OpsError> {
    let bytes = encode(&checkpoint_tensors(params, optimizer_state), metadata)?;
    write_atomically(path, &bytes)
}

/// Reads and parses the safetensors file at `path`.
pub fn load(path: &Path) -> Result<TensorFile, OpsError> {
    let bytes = std::fs::read(path).map_err(|source| OpsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, &path.display().to_string())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it
/// to `path` and syncs the directory. The only file writing in `ops`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OpsError> {
    let io = |p: &Path| {
        let p: PathBuf = p.to_path_buf();
        move |source| OpsError::Io { path: p, source }
    };
    let directory = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| OpsError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = directory.join(temporary_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(bytes).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, path).map_err(io(path))?;
        // Make the rename itself durable.
        std::fs::File::open(&directory)
            .and_then(|d| d.sync_all())
            .map_err(io(&directory))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}
