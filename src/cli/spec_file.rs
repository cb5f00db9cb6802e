//! Job spec files as a person edits them: read, parsed and validated, with
//! errors that name the file, the line and the field (`FILE:LINE: field:
//! problem`); TOML syntax errors carry toml's own line, column and excerpt.
use std::path::Path;

use anyhow::Context;
use coordinator::spec::{JobSpec, SpecError, SpecFormat};

/// The format of a spec file: JSON when its name ends in `.json`.
pub(crate) fn format_of(path: &Path) -> SpecFormat {
    if path.extension().is_some_and(|e| e == "json") {
        SpecFormat::Json
    } else {
        SpecFormat::Toml
    }
}

/// The 1-based line of TOML `text` that sets the dotted `field` (for
/// example `optimizer.lr` inside `[optimizer]`, or `model.config` written
/// inline); `None` when it cannot be found (a missing field).
pub(crate) fn line_of_field(text: &str, field: &str) -> Option<usize> {
    let parts: Vec<&str> = field.split('.').collect();
    let key_line = |line: &str, key: &str| {
        let line = line.trim_start();
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
            || line
                .strip_prefix(&format!("\"{key}\""))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    // Longest table prefix first: `[a.b]` then `c`, `[a]` then `b.c` or
    // `b = { c = ... }`, then top level.
    for split in (0..parts.len()).rev() {
        let table = parts[..split].join(".");
        let rest = &parts[split..];
        let mut in_table = split == 0;
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if let Some(header) = trimmed.strip_prefix('[').and_then(|t| t.split(']').next()) {
                in_table = header.trim_matches('[').trim() == table;
                continue;
            }
            if !in_table {
                continue;
            }
            // `key = ...` or `key.sub = ...` for the first remaining part.
            if key_line(trimmed, rest[0]) || key_line(trimmed, &rest.join(".")) {
                return Some(index + 1);
            }
        }
    }
    // The table itself (`[optimizer]` for a missing `optimizer.lr`).
    let table = parts[..parts.len().saturating_sub(1)].join(".");
    if table.is_empty() {
        return None;
    }
    let header = format!("[{table}]");
    text.lines()
        .position(|line| line.trim() == header)
        .map(|index| index + 1)
}

/// Reads, parses and validates the job spec at `path`.
pub(crate) fn read_spec(path: &Path) -> anyhow::Result<JobSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read job spec {}", path.display()))?;
    let format = format_of(path);
    JobSpec::parse(&text, format).map_err(|error| locate(path, &text, format, error))
}

/// An error of the spec at `path` (with contents `text`), with the file and,
/// for a field's value, its line.
pub(crate) fn locate(
    path: &Path,
    text: &str,
    format: SpecFormat,
    error: SpecError,
) -> anyhow::Error {
    match &error {
        SpecError::Invalid { field, problem } => {
            let line = match format {
                SpecFormat::Toml => line_of_field(text, field),
                SpecFormat::Json => text
                    .lines()
                    .position(|line| {
                        let last = field.rsplit('.').next().unwrap_or(field);
                        line.contains(&format!("\"{last}\""))
                    })
                    .map(|index| index + 1),
            };
            match line {
                Some(line) => anyhow::anyhow!(
                    "{}:{line}: invalid job spec: field `{field}`: {problem}",
                    path.display()
                ),
                None => anyhow::anyhow!(
                    "{}: invalid job spec: field `{field}`: {problem}",
                    path.display()
                ),
            }
        }
        _ => anyhow::Error::new(error).context(format!("{}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::line_of_field;

    const SPEC: &str = "name = \"x\"\nsteps = 3\n\n[model]\nkind = \"mlp\"\nconfig = { d_in = 4 }\n\n[optimizer]\nkind = \"adamw\"\nlr = -1.0\n";

    #[track_caller]
    fn check(field: &str, expected: Option<usize>) {
        assert_eq!(line_of_field(SPEC, field), expected, "{field}");
    }

    #[test]
    fn fields_are_found_in_their_tables() {
        check("steps", Some(2));
        check("model.kind", Some(5));
        check("model.config", Some(6));
        check("model.config.d_in", Some(6));
        check("optimizer.lr", Some(10));
        check("optimizer.betas", Some(8));
        check("global_batch", None);
    }
}
