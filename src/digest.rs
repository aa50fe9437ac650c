//! Content digests: what a registry may name content by, and checking content against them.
//!
//! The OCI image spec registers two algorithms, `sha256` (what every registry uses) and
//! `sha512`; regmirror verifies both, with the algorithm the expected digest names. Digests
//! end up in URLs, so one is accepted only in its exact form (`<algorithm>:<lower-case hex>` of
//! the algorithm's length): a `Docker-Content-Digest` of `sha256:x/../../evil` is refused
//! before it can become a path. Any other algorithm is refused with a message saying so, never
//! compared against a sha256 that cannot match.

use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm regmirror can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex characters in a digest of this algorithm.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// Why a string is not a digest regmirror can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex> or sha512:<128>")]
    Malformed(String),
    #[error(
        "digest {digest:?} uses algorithm {algorithm:?}; regmirror verifies sha256 and sha512 only"
    )]
    Unsupported { digest: String, algorithm: String },
}

/// The most characters of a refused digest quoted: a sha512 digest has 135.
const SHOWN: usize = 150;

/// The algorithm of a well-formed digest; anything else is refused, its text clipped so a
/// hostile value cannot flood a message.
pub fn parse(digest: &str) -> Result<Algorithm, DigestError> {
    let shown = || crate::untrusted::clip(digest, SHOWN);
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(DigestError::Malformed(shown()));
    };
    let algorithm = match algorithm {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        other if is_algorithm_name(other) && is_hex(hex) => {
            return Err(DigestError::Unsupported {
                digest: shown(),
                algorithm: other.to_string(),
            })
        }
        _ => return Err(DigestError::Malformed(shown())),
    };
    if hex.len() == algorithm.hex_len() && is_hex(hex) {
        Ok(algorithm)
    } else {
        Err(DigestError::Malformed(shown()))
    }
}

/// `<algorithm>:<hex>` of `bytes`.
pub fn of(algorithm: Algorithm, bytes: &[u8]) -> String {
    let mut digester = Digester::new(algorithm);
    digester.update(bytes);
    digester.finish()
}

/// A digest computed as bytes stream past.
#[derive(Clone)]
pub struct Digester(State);

#[derive(Clone)]
enum State {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithm = match self.0 {
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha512(_) => Algorithm::Sha512,
        };
        f.debug_tuple("Digester").field(&algorithm.name()).finish()
    }
}

impl Digester {
    pub fn new(algorithm: Algorithm) -> Self {
        Digester(match algorithm {
            Algorithm::Sha256 => State::Sha256(Sha256::new()),
            Algorithm::Sha512 => State::Sha512(Sha512::new()),
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            State::Sha256(h) => h.update(bytes),
            State::Sha512(h) => h.update(bytes),
        }
    }

    /// `<algorithm>:<hex>` of everything seen.
    pub fn finish(self) -> String {
        match self.0 {
            State::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            State::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The OCI grammar's algorithm component: `[a-z0-9]+([+._-][a-z0-9]+)*`, loosely.
fn is_algorithm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
}

fn is_hex(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_sha512_are_verified_with_their_own_algorithm() {
        let d256 = of(Algorithm::Sha256, b"hello");
        let d512 = of(Algorithm::Sha512, b"hello");
        assert_eq!(
            d256,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(d512.starts_with("sha512:9b71d224bd62f378"));
        assert_eq!(parse(&d256), Ok(Algorithm::Sha256));
        assert_eq!(parse(&d512), Ok(Algorithm::Sha512));
        let mut streamed = Digester::new(Algorithm::Sha512);
        streamed.update(b"hel");
        streamed.update(b"lo");
        assert_eq!(streamed.finish(), d512);
    }

    #[test]
    fn anything_that_could_change_a_url_is_refused() {
        for bad in [
            "sha256:x/../../evil?q=",
            "sha256:../../x",
            "sha256:",
            "sha256",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha256:{}/", "a".repeat(64)),
            &format!("sha512:{}", "a".repeat(64)),
            "",
        ] {
            assert!(
                matches!(parse(bad), Err(DigestError::Malformed(_))),
                "{bad}"
            );
        }
        let long = format!("sha256:{}", "/".repeat(10_000));
        let err = parse(&long).unwrap_err().to_string();
        assert!(err.len() < 300, "a hostile value is clipped: {err}");
    }

    #[test]
    fn other_algorithms_are_refused_by_name() {
        let err = parse(&format!("md5:{}", "a".repeat(32))).unwrap_err();
        assert!(matches!(err, DigestError::Unsupported { .. }));
        assert!(
            err.to_string().contains("verifies sha256 and sha512 only"),
            "{err}"
        );
    }
}
