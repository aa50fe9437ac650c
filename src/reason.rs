//! Why something failed, in one of a few stable words: the *reason class* an operator sorts,
//! counts and alerts on (`regmirror_failures_total{reason}`), beside the message that
//! says exactly what happened.
//!
//! Every typed error maps to one ([`crate::registry::Failure::reason`],
//! `copy::CopyError::reason`); the set is small on purpose and only ever grows, so alert
//! rules and dashboards written against it keep working.

use std::fmt;

/// A failure's reason class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Credentials missing, wrong or expired, or not allowed to do this.
    Auth,
    /// The image, tag or repository does not exist (at the source, usually).
    NotFound,
    /// A registry's pull budget or 429s kept it waiting past `max_wait`.
    RateLimited,
    /// No connection, a connection that broke, or a registry answering with server errors.
    Unreachable,
    /// A TLS certificate not trusted, or a handshake that failed.
    Tls,
    /// Bytes that do not match their digest.
    Integrity,
    /// A registry (or regmirror's own rules) refused the request: a push not allowed, a
    /// redirect not followed, deletes disabled.
    Refused,
    /// The target never moves a tag, and upstream moved it.
    Immutable,
    /// `verify`: no signature made with the mirror's key vouches for the image (none, a bad
    /// one, or one for another digest).
    Unverified,
    /// A request, transfer, listing or image that did not finish in its time.
    Timeout,
    /// A file of an OCI image layout that could not be read or written (permissions, a full
    /// disk), or that a layout may not hold (a link, a name outside it).
    Storage,
    /// The source sent something regmirror will not use: a malformed or obsolete manifest,
    /// an answer too large, a protocol error.
    InvalidUpstream,
    /// What mirrors.toml asks for cannot be done as written: rules that select nothing, two
    /// mirrors wanting one tag, a prune over its limits.
    Config,
    /// regmirror was stopping: the image was not started or not finished.
    Stopped,
    /// A fault of regmirror's own.
    Internal,
}

impl Reason {
    /// Every class, in the order reports list them.
    pub const ALL: [Reason; 15] = [
        Reason::Auth,
        Reason::NotFound,
        Reason::RateLimited,
        Reason::Unreachable,
        Reason::Tls,
        Reason::Integrity,
        Reason::Refused,
        Reason::Immutable,
        Reason::Unverified,
        Reason::Timeout,
        Reason::Storage,
        Reason::InvalidUpstream,
        Reason::Config,
        Reason::Stopped,
        Reason::Internal,
    ];

    /// The class as reports, logs, `/healthz` and metric labels write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Auth => "auth",
            Reason::NotFound => "not_found",
            Reason::RateLimited => "rate_limited",
            Reason::Unreachable => "unreachable",
            Reason::Tls => "tls",
            Reason::Integrity => "integrity",
            Reason::Refused => "refused",
            Reason::Immutable => "immutable",
            Reason::Unverified => "unverified",
            Reason::Timeout => "timeout",
            Reason::Storage => "storage",
            Reason::InvalidUpstream => "invalid_upstream",
            Reason::Config => "config",
            Reason::Stopped => "stopped",
            Reason::Internal => "internal",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_lower_snake_case_word() {
        let words: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(words.len(), Reason::ALL.len());
        for word in words {
            assert!(
                word.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{word}"
            );
        }
    }
}
