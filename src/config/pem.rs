//! The PEM blocks of a `ca_file`: a CA bundle holds certificates and nothing else.
//!
//! A key put in it by mistake (a `cat ca.crt ca.key > ca.pem`) would be copied wherever the
//! bundle goes, such as every node's runtime settings (`regmirror clients`), so the config
//! loader refuses a file that holds one ([`private_key`]) and what is copied is only the
//! `CERTIFICATE` blocks ([`certificates`]).

/// One `-----BEGIN <label>-----` … `-----END <label>-----` block.
struct Block<'a> {
    label: &'a str,
    /// From its BEGIN line to the end of its END line (or of the text, if it has none).
    text: &'a str,
}

const BEGIN: &str = "-----BEGIN ";

/// The label of a BEGIN line that starts `text`.
fn label(text: &str) -> &str {
    let after = &text[BEGIN.len()..];
    let label = after.split("-----").next().unwrap_or_default();
    label.lines().next().unwrap_or_default()
}

/// Every block of `pem` in order, text between blocks skipped.
fn blocks(pem: &str) -> impl Iterator<Item = Block<'_>> {
    let mut rest = pem;
    std::iter::from_fn(move || {
        let start = rest.find(BEGIN)?;
        let label = label(&rest[start..]);
        let end_line = format!("-----END {label}-----");
        let end = match rest[start..].find(&end_line) {
            Some(at) => start + at + end_line.len(),
            None => rest.len(),
        };
        let block = Block {
            label,
            text: &rest[start..end],
        };
        rest = &rest[end..];
        Some(block)
    })
}

/// The label of the first private key in `pem` (`PRIVATE KEY`, `RSA PRIVATE KEY`,
/// `ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`…), if it holds one: every BEGIN line is
/// looked at, one inside another block too.
pub(crate) fn private_key(pem: &str) -> Option<&str> {
    pem.match_indices(BEGIN)
        .map(|(at, _)| label(&pem[at..]))
        .find(|label| label.contains("PRIVATE KEY"))
}

/// The `CERTIFICATE` blocks of `pem`, each on its own lines; empty when it has none. A block
/// with another BEGIN line inside it is not one.
pub(crate) fn certificates(pem: &str) -> String {
    let mut out = String::new();
    let whole = |b: &Block<'_>| b.label == "CERTIFICATE" && b.text.matches(BEGIN).count() == 1;
    for block in blocks(pem).filter(whole) {
        out.push_str(block.text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ==\n-----END CERTIFICATE-----";
    const KEY: &str =
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKey==\n-----END EC PRIVATE KEY-----";

    #[test]
    fn only_certificates_are_kept() {
        let bundle = format!("# our CA\n{CERT}\n{KEY}\nsubject=CN=x\n{CERT}\n");
        assert_eq!(certificates(&bundle), format!("{CERT}\n{CERT}\n"));
        assert!(!certificates(&bundle).contains("MHcCAQEEIKey"));
        assert_eq!(certificates("no PEM at all"), "");
        // A key hidden inside a certificate's block is found, and the block not copied.
        let hidden = format!("-----BEGIN CERTIFICATE-----\n{KEY}\n-----END CERTIFICATE-----\n");
        assert_eq!(private_key(&hidden), Some("EC PRIVATE KEY"));
        assert_eq!(certificates(&hidden), "");
    }

    #[test]
    fn every_kind_of_private_key_is_found() {
        assert_eq!(private_key(CERT), None);
        assert_eq!(
            private_key(&format!("{CERT}\n{KEY}\n")),
            Some("EC PRIVATE KEY")
        );
        for label in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
        ] {
            // Even one never closed.
            let pem = format!("{CERT}\n-----BEGIN {label}-----\nAAAA\n");
            assert_eq!(private_key(&pem), Some(label), "{pem}");
        }
    }
}
