//! The image list kept in AWS SSM Parameter Store.
//!
//! A `StringList` is comma-separated; a `String` or `SecureString` (read decrypted) may use
//! commas or newlines. Blank entries and `#` comments are skipped. The parameter is read at
//! the start of every pass, so editing it changes what the next pass mirrors. Credentials and
//! region come from the AWS default chain ([`crate::aws`]).

use aws_sdk_ssm::error::DisplayErrorContext;

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
}

/// Reads the parameter and returns its entries, in order.
pub async fn read_list(settings: &SsmSettings) -> Result<Vec<String>, SsmError> {
    let fail = |reason: String| SsmError {
        parameter: settings.parameter.clone(),
        reason,
    };
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
        .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
    let value = answer
        .parameter()
        .and_then(|p| p.value())
        .ok_or_else(|| fail("the answer holds no value".to_string()))?;
    Ok(entries(value))
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
}
