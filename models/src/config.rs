//! Reading a model's JSON configuration (the reference constructor's
//! keyword arguments) with errors that name the model and the field.
use crate::ModelError;

/// A model's configuration object, read field by field.
#[derive(Clone, Copy, Debug)]
pub struct ConfigReader<'a> {
    kind: &'static str,
    object: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> ConfigReader<'a> {
    /// Reads `config`, which must be a JSON object, for model `kind`.
    pub fn new(kind: &'static str, config: &'a serde_json::Value) -> Result<Self, ModelError> {
        let object = config.as_object().ok_or_else(|| ModelError::BadConfig {
            kind: kind.to_string(),
            field: String::new(),
            reason: format!("expected a JSON object, got {config}"),
        })?;
        Ok(ConfigReader { kind, object })
    }

    /// The model kind this configuration is for.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn error(&self, field: &str, reason: String) -> ModelError {
        ModelError::BadConfig {
            kind: self.kind.to_string(),
            field: field.to_string(),
            reason,
        }
    }

    /// A required size: an integer of at least 1 (and at most 2^24, far
    /// beyond what fits in memory as a layer width).
    pub fn size(&self, field: &str) -> Result<usize, ModelError> {
        let value = self
            .object
            .get(field)
            .ok_or_else(|| self.error(field, "missing".to_string()))?;
        self.parse_size(field, value)
    }

    /// An optional size with a default.
    pub fn size_or(&self, field: &str, default: usize) -> Result<usize, ModelError> {
        match self.object.get(field) {
            None => Ok(default),
            Some(value) => self.parse_size(field, value),
        }
    }

    fn parse_size(&self, field: &str, value: &serde_json::Value) -> Result<usize, ModelError> {
        match value.as_u64() {
            Some(n) if (1..=1 << 24).contains(&n) => Ok(n as usize),
            _ => Err(self.error(
                field,
                format!("expected an integer from 1 to 16777216, got {value}"),
            )),
        }
    }

    /// A required string.
    pub fn string(&self, field: &str) -> Result<&'a str, ModelError> {
        let value = self
            .object
            .get(field)
            .ok_or_else(|| self.error(field, "missing".to_string()))?;
        value
            .as_str()
            .ok_or_else(|| self.error(field, format!("expected a string, got {value}")))
    }
}
