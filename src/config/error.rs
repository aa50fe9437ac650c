//! Config errors that point at the problem: file, line, column and the offending text.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why mirrors.toml was refused. Always exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("cannot read config file {path}: {reason} (choose another with --config or REGMIRROR_CONFIG)")]
    Unreadable { path: PathBuf, reason: String },
    /// A problem at a place in the file.
    #[error("{0}")]
    At(Located),
    /// A problem with the file as a whole.
    #[error("{path}: {message}")]
    Whole { path: PathBuf, message: String },
}

impl ConfigError {
    pub(crate) fn unreadable(path: &Path, err: std::io::Error) -> Self {
        let reason = match err.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => err.to_string(),
        };
        ConfigError::Unreadable {
            path: path.to_path_buf(),
            reason,
        }
    }

    /// An error at a byte span of `text`, shown as `path:line:column: message` and the line.
    pub(crate) fn at(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_text = text[line_start..line_end].trim_end_matches('\r');
        let column = text[line_start..start].chars().count() + 1;
        let width = text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        ConfigError::At(Located {
            path: path.to_path_buf(),
            line: text[..start].matches('\n').count() + 1,
            column,
            message: message.into(),
            line_text: line_text.to_string(),
            width,
        })
    }
}

/// A message tied to a place in the file.
#[derive(Debug)]
pub struct Located {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    line_text: String,
    width: usize,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )?;
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.line_text)?;
        let pad: String = self
            .line_text
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{:gutter$} | {pad}{}", "", "^".repeat(self.width))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_at_line_and_column() {
        let text = "a = 1\n[defaults]\nconcurrensy = 4\n";
        let start = text.find("concurrensy").unwrap();
        let err = ConfigError::at(Path::new("m.toml"), text, start..start + 11, "unknown key");
        let shown = err.to_string();
        assert!(shown.starts_with("m.toml:3:1: unknown key\n"), "{shown}");
        assert!(
            shown.contains("3 | concurrensy = 4\n  | ^^^^^^^^^^^"),
            "{shown}"
        );
    }
}
