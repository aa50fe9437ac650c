//! Config errors that point at the problem: file, line, column and the offending text.
//!
//! The offending line is shown, but never the value of a key that holds a secret
//! (`password`, `sync_token`, `webhook_secret`, and keys that look like them, such as a
//! misspelt `passwrod`): it becomes `"<redacted>"`, and a message that would quote it (an
//! invalid type, a bad `${…}`) quotes `<redacted>` instead. An error goes to the log and to
//! `/healthz`, which anyone who can reach the endpoint may read.

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
        let column = text[line_start..start].chars().count();
        let width = text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let mut message = message.into();
        let redacted = redact(line_text);
        let (column, width) = redacted.place(column, width);
        for secret in redacted.secrets_under(column, width) {
            message = scrub(&message, secret);
        }
        ConfigError::At(Located {
            path: path.to_path_buf(),
            line: text[..start].matches('\n').count() + 1,
            column: column + 1,
            message,
            line_text: redacted.text,
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

/// What is shown in place of a secret value.
const MASK: &str = "\"<redacted>\"";

/// Whether a key holds a secret, or looks as if it was meant to.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "token", "secret"]
        .iter()
        .any(|word| key.contains(word))
}

/// A line with the values of its secret keys masked.
#[derive(Debug)]
struct Redacted<'a> {
    text: String,
    masks: Vec<Mask<'a>>,
}

/// One value masked in a [`Redacted`] line.
#[derive(Debug)]
struct Mask<'a> {
    /// Its first column (in characters) in the masked line.
    at: usize,
    /// What it was.
    original: &'a str,
    /// Characters shown in its place.
    shown: usize,
}

impl<'a> Redacted<'a> {
    /// An underline at `column` (0-based, in the original line) of `width`, moved to the
    /// masked line: onto the mask when it started inside a masked value.
    fn place(&self, column: usize, width: usize) -> (usize, usize) {
        let mut shift = 0isize;
        for mask in &self.masks {
            let original_at = (mask.at as isize - shift) as usize;
            let length = mask.original.chars().count();
            if column >= original_at + length.max(1) {
                shift += mask.shown as isize - length as isize;
            } else if column >= original_at {
                return (mask.at, mask.shown);
            }
        }
        ((column as isize + shift) as usize, width)
    }

    /// The masked values an underline at `column` (in the masked line) falls on.
    fn secrets_under(&self, column: usize, width: usize) -> impl Iterator<Item = &'a str> + '_ {
        self.masks
            .iter()
            .filter(move |m| column < m.at + m.shown && m.at < column + width)
            .map(|m| m.original)
    }
}

/// `line` with the value of every secret key masked (`password = "x"` and inline tables'
/// `{ password = 'x' }` alike), and credentials written into any value (`"user:pw@host"`).
fn redact(line: &str) -> Redacted<'_> {
    let mut text = String::with_capacity(line.len());
    let mut masks = Vec::new();
    let mut rest = line;
    while let Some((key_end, value_start)) = next_assignment(rest) {
        let key = rest[..key_end]
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .next()
            .unwrap_or_default();
        let value_len = value_length(&rest[value_start..]);
        text.push_str(&rest[..value_start]);
        let value = &rest[value_start..value_start + value_len];
        let shown = match (is_secret_key(key), userinfo(value)) {
            (true, _) if !value.is_empty() && !only_variables(value) => Some(MASK.to_string()),
            (_, Some((start, end))) => {
                Some(format!("{}<redacted>{}", &value[..start], &value[end..]))
            }
            _ => None,
        };
        match shown {
            Some(shown) => {
                masks.push(Mask {
                    at: text.chars().count(),
                    original: value,
                    shown: shown.chars().count(),
                });
                text.push_str(&shown);
            }
            None => text.push_str(value),
        }
        rest = &rest[value_start + value_len..];
    }
    text.push_str(rest);
    Redacted { text, masks }
}

/// Whether a quoted value only names environment variables (`"${TOKEN}"`, even `"${TOKEN"`):
/// the secret is in the environment, and the name helps whoever reads the error.
fn only_variables(value: &str) -> bool {
    let content = value.trim_matches(['"', '\'']);
    content.starts_with("${")
        && content
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"${}_".contains(&b))
}

/// Where the credentials in a quoted value like `"user:pw@host/path"` or
/// `"https://user:pw@host"` start and end (at the `@`), as byte offsets into `value`.
fn userinfo(value: &str) -> Option<(usize, usize)> {
    let content = value.strip_prefix(['"', '\''])?;
    let start = content.find("://").map_or(0, |scheme| scheme + 3);
    let rest = &content[start..];
    let authority = rest.split('/').next().unwrap_or(rest);
    let at = authority.rfind('@')?;
    // Offsets into `value`, which has the opening quote before `content`.
    authority[..at]
        .contains(':')
        .then_some((1 + start, 1 + start + at))
}

/// The next `key = ` in `text`: where the key ends and where its value starts.
fn next_assignment(text: &str) -> Option<(usize, usize)> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '=') => {
                let key_end = text[..i].trim_end().len();
                let value_start = i + 1 + (text[i + 1..].len() - text[i + 1..].trim_start().len());
                return Some((key_end, value_start));
            }
            (None, '#') => return None,
            _ => {}
        }
    }
    None
}

/// Bytes of the TOML value at the start of `text`: a string (to its closing quote, or the end
/// of the line for one left open or a multi-line one), or anything else up to `,`, `}`, `#`.
fn value_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, quote @ ('"' | '\''))) => {
            let mut escaped = false;
            for (i, c) in chars {
                match c {
                    '\\' if quote == '"' && !escaped => escaped = true,
                    c if c == quote && !escaped => return i + 1,
                    _ => escaped = false,
                }
            }
            text.len()
        }
        _ => text
            .find([',', '}', '#'])
            .unwrap_or(text.len())
            .min(text.trim_end().len()),
    }
}

/// `message` with every quoted part that comes from `secret` (`"…"` or `` `…` ``) replaced.
pub(super) fn scrub(message: &str, secret: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        let Some(close) = rest[open + 1..].find(quote) else {
            break;
        };
        let quoted = &rest[open + 1..open + 1 + close];
        out.push_str(&rest[..open]);
        if !quoted.is_empty() && secret.contains(quoted.trim_matches('\\')) {
            out.push(quote);
            out.push_str("<redacted>");
            out.push(quote);
        } else {
            out.push_str(&rest[open..open + close + 2]);
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
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

    fn shown(line: &str, at: &str, message: &str) -> String {
        let start = line.find(at).unwrap();
        ConfigError::at(Path::new("m.toml"), line, start..start + at.len(), message).to_string()
    }

    #[test]
    fn credentials_in_a_url_are_never_shown_and_its_scheme_is_kept() {
        let line = "endpoint = \"https://me:Sup3r-S3cret@proxy.example.com/hub\"";
        let err = shown(
            line,
            "\"https://me:Sup3r-S3cret@proxy.example.com/hub\"",
            "endpoint \"https://me:Sup3r-S3cret@proxy.example.com/hub\": holds credentials",
        );
        assert!(!err.contains("Sup3r"), "{err}");
        assert!(
            err.contains("endpoint = \"https://<redacted>@proxy.example.com/hub\""),
            "{err}"
        );
    }

    #[test]
    fn secret_values_are_never_shown() {
        let password_alone = shown(
            "password = \"Sup3r-S3cret\"",
            "\"Sup3r-S3cret\"",
            "registries.\"x.io\".password is set but registries.\"x.io\".username is not",
        );
        assert!(!password_alone.contains("Sup3r"), "{password_alone}");
        assert!(password_alone.contains("registries.\"x.io\".password is set"));
        assert!(
            password_alone.ends_with("| password = \"<redacted>\"\n  |            ^^^^^^^^^^^^"),
            "{password_alone}"
        );
        // An invalid type quotes the value; a misspelt key looks like a secret.
        let typed = shown(
            "sync_token = 12345678",
            "12345678",
            "invalid type: integer `12345678`, expected a string",
        );
        assert!(!typed.contains("12345678"), "{typed}");
        let misspelt = shown("passwrod = 'hunter2'", "passwrod", "unknown key `passwrod`");
        assert!(!misspelt.contains("hunter2"), "{misspelt}");
        assert!(misspelt.contains("unknown key `passwrod`"), "{misspelt}");
        let inline = shown(
            "\"x.io\" = { username = \"u\", password = \"p\\\"w\", insecur = true }",
            "insecur",
            "unknown key `insecur`",
        );
        assert!(!inline.contains("p\\\"w"), "{inline}");
        assert!(inline.contains("username = \"u\""), "{inline}");
        let caret = inline.lines().last().unwrap().find('^').unwrap();
        let key = inline.lines().nth(2).unwrap().find("insecur").unwrap();
        assert_eq!(caret, key, "{inline}");
        let bad_name = shown(
            "webhook_secret = \"${a b}\"",
            "\"${a b}\"",
            "webhook_secret: \"a b\" is not an environment variable name",
        );
        assert!(!bad_name.contains("a b"), "{bad_name}");
        let open = shown(
            "password = \"never closed",
            "password",
            "invalid basic string",
        );
        assert!(!open.contains("never closed"), "{open}");
        let target = shown(
            "target = \"u:s3cr3t@reg.io/m\"",
            "\"u:s3cr3t@reg.io/m\"",
            "invalid target \"<redacted>@reg.io/m\"",
        );
        assert!(!target.contains("s3cr3t"), "{target}");
        assert!(
            target.ends_with(
                "| target = \"<redacted>@reg.io/m\"\n  |          ^^^^^^^^^^^^^^^^^^^^^"
            ),
            "{target}"
        );
        // Variables are named, not valued: shown as written.
        let variable = shown(
            "password = \"${TOKEN}\"",
            "\"${",
            "environment variable TOKEN is not set",
        );
        assert!(variable.contains("password = \"${TOKEN}\""), "{variable}");
        // A plain value, and an `@` in a path, are shown as written.
        let plain = shown("target = \"reg.io/team@x\"", "\"reg", "m");
        assert!(plain.contains("\"reg.io/team@x\""), "{plain}");
    }
}
