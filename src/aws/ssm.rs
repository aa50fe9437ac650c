//! The image list kept in AWS SSM Parameter Store.
//!
//! A `StringList` is comma-separated; a `String` or `SecureString` (read decrypted) may use
//! commas or newlines. Blank entries and `#` comments are skipped. The parameter is read at
//! the start of every pass, so editing it changes what the next pass mirrors. Credentials and
//! region come from the AWS default chain ([`crate::aws`]).
//!
//! A SecureString's content is never echoed: when one holds anything that is not an image
//! reference (a database password, say, named by mistake), the whole parameter is refused
//! with the positions of the bad entries, not their text.

use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;

use aws_sdk_ssm::error::ProvideErrorMetadata;

use crate::reason::Reason;
use crate::reference::ImageRef;

/// Which parameter to read: `[ssm]` or `--ssm-parameter`, as the config resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmSettings {
    /// The parameter's name, such as `/mirror/images`.
    pub parameter: String,
    /// Its region; the AWS default chain (`AWS_REGION`, profile, instance metadata) if `None`.
    pub region: Option<String>,
}

/// The parameter could not be read; names it and carries AWS's reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("SSM parameter {parameter}: {reason}")]
pub struct SsmError {
    pub parameter: String,
    pub reason: String,
    /// Its class: no such parameter, not allowed, AWS not reached, or a parameter that is
    /// not an image list.
    pub class: Reason,
}

/// Reads the parameter and returns its entries, in order.
pub async fn read_list(settings: &SsmSettings) -> Result<Vec<String>, SsmError> {
    let failed = |class: Reason| {
        move |reason: String| SsmError {
            parameter: settings.parameter.clone(),
            reason,
            class,
        }
    };
    let fail = failed(Reason::Config);
    let aws = crate::aws::sdk_config(settings.region.as_deref(), "[ssm]")
        .await
        .map_err(fail)?;
    let client = aws_sdk_ssm::Client::new(&aws);
    let answer = client
        .get_parameter()
        .name(&settings.parameter)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            let class = match e.code() {
                Some("ParameterNotFound" | "ParameterVersionNotFound") => Reason::NotFound,
                Some(code)
                    if code.contains("Denied")
                        || code.contains("Token")
                        || code.contains("Signature")
                        || code.contains("Unrecognized") =>
                {
                    Reason::Auth
                }
                Some(_) => Reason::Refused,
                None => Reason::Unreachable,
            };
            failed(class)(DisplayErrorContext(&e).to_string())
        })?;
    let parameter = answer
        .parameter()
        .ok_or_else(|| fail("the answer holds no value".to_string()))?;
    let value = parameter
        .value()
        .ok_or_else(|| fail("the answer holds no value".to_string()))?;
    let listed = entries(value);
    if parameter.r#type() == Some(&ParameterType::SecureString) {
        secure_entries_are_images(&listed).map_err(fail)?;
    }
    Ok(listed)
}

/// A SecureString is used only if every entry is an image reference; otherwise the reason
/// names the entries by position, never by content.
fn secure_entries_are_images(listed: &[String]) -> Result<(), String> {
    let bad: Vec<String> = listed
        .iter()
        .enumerate()
        .filter(|(_, entry)| ImageRef::parse(entry).is_err())
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    let which = match bad.as_slice() {
        [] => return Ok(()),
        [one] => format!("entry {one} is not an image reference"),
        many => format!("entries {} are not image references", many.join(", ")),
    };
    Err(format!(
        "a SecureString whose {which} (its content is not shown): is this the parameter meant?"
    ))
}

/// The image references in a parameter's value.
pub fn entries(value: &str) -> Vec<String> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty() && !entry.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_newlines_blanks_and_comments() {
        assert_eq!(
            entries("nginx:stable,logstash:7.11.2"),
            ["nginx:stable", "logstash:7.11.2"]
        );
        assert_eq!(
            entries("# base images\nnginx:stable\n\n  redis:7 ,, alpine:3.19\r\n# done"),
            ["nginx:stable", "redis:7", "alpine:3.19"]
        );
        assert!(entries(" , \n").is_empty());
    }

    #[test]
    fn a_secure_string_that_is_not_an_image_list_is_refused_without_its_content() {
        let listed = entries("nginx:stable\nSup3r-S3cret!\nredis:7,also secret");
        let reason = secure_entries_are_images(&listed).unwrap_err();
        assert!(reason.contains("entries 2, 4 are not"), "{reason}");
        assert!(
            !reason.contains("Sup3r") && !reason.contains("also"),
            "{reason}"
        );
        assert!(secure_entries_are_images(&entries("nginx:stable,redis:7")).is_ok());
    }
}
