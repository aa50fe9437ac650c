//! The AWS SDK set-up shared by [`crate::aws::ssm`] and [`crate::aws::ecr`]: the default chain for
//! credentials and region (environment, profile, container or instance role), an explicit
//! region when the config gives one, and `AWS_ENDPOINT_URL` honoured (the tests point it at
//! moto).

pub mod ecr;
pub mod ssm;

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Loads the SDK configuration; fails, saying what to set, when no region can be found.
pub async fn sdk_config(region: Option<&str>, region_key: &str) -> Result<SdkConfig, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(format!(
            "no AWS region: set AWS_REGION, or `region` in {region_key}"
        ));
    }
    Ok(config)
}
