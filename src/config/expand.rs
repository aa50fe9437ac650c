//! How a value of mirrors.toml is read: `${VAR}`s expanded from the environment, and every
//! refusal placed at the value's line and column without quoting what a variable held.
//!
//! [`Resolver`] carries the file's text and environment; the other parts of stage two
//! (`process`, `registries`, `mirrors`) add their methods to it, and read each value through
//! [`Resolver::expand`] and refuse it through [`Resolver::at`].

use std::ops::Range;
use std::path::Path;

use chrono_tz::Tz;
use toml::Spanned;

use super::ConfigError;
use crate::schedule::Schedule;

/// The names of the `${VAR}`s in `written` (`$$` is a literal `$`, not a variable).
fn variables(written: &str) -> impl Iterator<Item = &str> {
    let mut rest = written;
    std::iter::from_fn(move || loop {
        let i = rest.find('$')?;
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            rest = after;
        } else if let Some((name, after)) = rest
            .strip_prefix("${")
            .and_then(|after| after.split_once('}'))
        {
            rest = after;
            return Some(name);
        } else {
            rest = &rest[1..];
        }
    })
}

/// Stage two's reader of one file: its text, to place errors, and the environment its
/// `${VAR}`s come from.
pub(super) struct Resolver<'a> {
    pub(super) path: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Byte offset of each line's start, so a line number costs a binary search, not a scan
    /// (a file of 10,000 images asks 20,000 times).
    line_starts: Vec<usize>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(
        path: &'a Path,
        text: &'a str,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Resolver<'a> {
        Resolver {
            path,
            text,
            env,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        }
    }

    /// The 1-based line a span starts on.
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        self.line_starts
            .partition_point(|&start| start <= span.start)
    }

    /// An error at `span`. A message about a value never quotes what its `${VAR}`s expanded
    /// to (a variable may hold `https://user:secret@proxy`, and errors reach the log and
    /// `/healthz`): see [`Resolver::unexpanded`].
    pub(super) fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let message = self.unexpanded(&span, message.into());
        ConfigError::at(self.path, self.text, span, message)
    }

    /// `message` with the value of every `${VAR}` written in `span` taken out again: where a
    /// value stands whole the message names its variable (`${PROXY_URL}`), and a quoted part
    /// of one (a parser quoting the URL's path) becomes `<redacted>`.
    fn unexpanded(&self, span: &Range<usize>, mut message: String) -> String {
        let written = self.text.get(span.clone()).unwrap_or_default();
        for name in variables(written) {
            let Some(value) = (self.env)(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            let named = format!("${{{name}}}");
            // As it is, and as `{:?}` quotes it.
            message = message.replace(&value, &named);
            message = message.replace(&value.escape_debug().to_string(), &named);
            message = super::error::scrub(&message, &value);
        }
        message
    }

    /// Expands `${VAR}` from the environment (`$$` is a literal `$`); an unset variable is an
    /// error naming it and the key that used it.
    pub(super) fn expand(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let raw = value.get_ref();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("$$") {
                out.push('$');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    return Err(
                        self.at(value.span(), format!("{key}: `${{` without a closing `}}`"))
                    );
                };
                let name = &after[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(self.at(
                        value.span(),
                        format!("{key}: {name:?} is not an environment variable name"),
                    ));
                }
                match (self.env)(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(self.at(
                            value.span(),
                            format!("{key}: environment variable {name} is not set"),
                        ))
                    }
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A duration written like `30s` or `1h 30m`.
    pub(super) fn duration(
        &self,
        text: &Spanned<String>,
        key: &str,
    ) -> Result<std::time::Duration, ConfigError> {
        let written = self.expand(text, key)?;
        humantime::parse_duration(&written).map_err(|e| {
            self.at(
                text.span(),
                format!("{key}: {e} (write it like \"30s\", \"30m\" or \"1h 30m\")"),
            )
        })
    }

    pub(super) fn zone(&self, name: &Spanned<String>, key: &str) -> Result<Tz, ConfigError> {
        let written = self.expand(name, key)?;
        Schedule::zone(&written).map_err(|e| self.at(name.span(), format!("{key}: {e}")))
    }

    pub(super) fn schedule(
        &self,
        expression: &Spanned<String>,
        zone: Tz,
        key: &str,
    ) -> Result<Schedule, ConfigError> {
        let written = self.expand(expression, key)?;
        Schedule::parse(&written, zone)
            .map_err(|e| self.at(expression.span(), format!("{key}: {e}")))
    }

    /// A count that cannot be negative, such as a reserve of pulls.
    pub(super) fn count(&self, n: &Spanned<i64>, key: &str) -> Result<u64, ConfigError> {
        u64::try_from(*n.get_ref()).map_err(|_| {
            self.at(
                n.span(),
                format!("{key} cannot be negative, it is {}", n.get_ref()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_of_a_value_are_found_as_expand_reads_them() {
        let names: Vec<&str> = variables("\"$${NOT} ${A}x${B_2}$$ ${open\"").collect();
        assert_eq!(names, ["A", "B_2"]);
    }
}
