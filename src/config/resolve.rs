//! Stage two of the config: from what the user typed to the validated [`Config`].
//!
//! [`resolve`] reads the parts in the order the file's errors are reported: the targets and
//! the process's settings ([`super::process`]), when mirrors run, each registry's settings
//! ([`super::registries`]), then the mirrors and their jobs ([`super::mirrors`]); last, every
//! registry a job uses gets settings. Each part reads values through [`Resolver`]
//! ([`super::expand`]), which expands `${VAR}`s and places errors.

use std::path::Path;

use super::expand::Resolver;
use super::file::RawConfig;
use super::registries::settle_registries;
use super::{Config, ConfigError, Overrides};
use crate::credentials::DockerConfig;

/// Validates `text` (the contents of `path`), reading `${VAR}`s through `env`.
pub(super) fn resolve(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    docker: &DockerConfig,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace("unknown field", "unknown key");
        ConfigError::at(path, text, e.span().unwrap_or(0..0), message)
    })?;
    let r = Resolver::new(path, text, env);
    let target_prefixes = r.target_prefixes(&raw, overrides)?;
    let ssm = r.ssm(&raw, overrides)?;
    let concurrency = r.concurrency(&raw.defaults)?;
    let rate_limit = r.rate_limit(&raw.rate_limit)?;
    let shutdown_grace = r.shutdown_grace(&raw.defaults)?;
    let when = r.when(&raw.defaults)?;
    let server = match &raw.server {
        Some(server) => Some(r.server(server)?),
        None => None,
    };
    let mut registries = r.registries(&raw.registries)?;
    let default_target = r.default_target(&raw, target_prefixes, &registries)?;
    let (jobs, mirrors) = r.mirrors(&raw, default_target.as_ref(), &when, ssm.as_ref())?;

    let in_use = jobs
        .iter()
        .flat_map(|job| [&job.source.registry, &job.target.registry])
        .chain(
            mirrors
                .iter()
                .filter_map(|m| m.selection.as_ref())
                .flat_map(|s| {
                    std::iter::once(&s.source.registry).chain(s.targets.iter().map(|t| &t.registry))
                }),
        );
    settle_registries(path, &mut registries, in_use, docker)?;

    Ok(Config {
        path: path.to_path_buf(),
        jobs,
        mirrors,
        concurrency,
        registries,
        rate_limit,
        shutdown_grace,
        server,
        default_target,
        ssm,
    })
}

/// [`resolve`] as the other parts' tests call it: a file named mirrors.toml, `env` as the
/// environment, no Docker config, no flags.
#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    pub(crate) fn resolve_with(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(
            Path::new("mirrors.toml"),
            text,
            &|name| env.get(name).cloned(),
            &DockerConfig::default(),
            &Overrides::default(),
        )
        .map_err(|e| e.to_string())
    }

    pub(crate) fn targets(config: &Config) -> Vec<String> {
        config.jobs.iter().map(|j| j.target.to_string()).collect()
    }

    #[test]
    fn the_issue_example_resolves() {
        let text = r#"
images = ["nginx:stable", "ghcr.io/org/app:v1"]
[defaults]
target = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/mirror"
concurrency = 4
[registries."docker.io"]
username = "${DOCKERHUB_USERNAME}"
password = "${DOCKERHUB_TOKEN}"
[registries."registry.internal:5000"]
insecure = true
[[mirror]]
source = "ghcr.io/org/tool"
tags = ["v1.2.0", "v1.3.0"]
target = "registry.internal:5000/tools/tool"
"#;
        let config = resolve_with(
            text,
            &[("DOCKERHUB_USERNAME", "me"), ("DOCKERHUB_TOKEN", "tok")],
        )
        .unwrap();
        let ecr = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/mirror";
        assert_eq!(
            targets(&config),
            [
                format!("{ecr}/nginx:stable"),
                format!("{ecr}/org/app:v1"),
                "registry.internal:5000/tools/tool:v1.2.0".to_string(),
                "registry.internal:5000/tools/tool:v1.3.0".to_string(),
            ]
        );
        let hub = config.registry("registry-1.docker.io");
        assert_eq!(hub.credentials.unwrap().password.expose(), "tok");
        assert!(config.registry("registry.internal:5000").plain_http);
        assert!(!config.registry("ghcr.io").plain_http);
        assert!(config.registry("127.0.0.1:5000").plain_http);
        assert_eq!(config.jobs[0].line, 2);
        assert_eq!(config.jobs[3].line, 13);
    }

    #[test]
    fn refusals_point_at_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("images = [\"a\"\n", "mirrors.toml:1:"),
            ("[defaults]\nconcurrensy = 4\n", "mirrors.toml:2:1: unknown key `concurrensy`"),
            ("images = [\"Nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n", "mirrors.toml:1:11: invalid image reference \"Nginx:1\""),
            ("images = [\"nginx\"]\n", "mirrors.toml:1:11: no target for docker.io/library/nginx:latest"),
            (
                "images = [\"nginx:1\", \"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n",
                "",
            ),
            (
                "images = [\"nginx:1\", \"quay.io/x/nginx:1\"]\n[[mirror]]\nsource = \"ghcr.io/nginx\"\ntags = [\"1\"]\ntarget = \"r.io/m/nginx\"\n[defaults]\ntarget = \"r.io/m\"\n",
                "mirrors.toml:4:9: ghcr.io/nginx:1 and docker.io/library/nginx:1 (line 1) would both be mirrored to r.io/m/nginx:1",
            ),
            ("[registries.\"x.io\"]\nusername = \"u\"\npassword = \"${NOPE}\"\n", "mirrors.toml:3:12: registries.\"x.io\".password: environment variable NOPE is not set"),
            ("[registries.\"x.io\"]\npassword = \"p\"\n", "mirrors.toml:2:12: registries.\"x.io\".password is set but registries.\"x.io\".username is not"),
            ("images = [\"a\"]\n[defaults]\ntarget = \"mirror\"\n", "mirrors.toml:3:10: invalid target \"mirror\""),
            ("images = [\"a\"]\n[defaults]\ntarget = \"r.io\"\nconcurrency = 0\n", "mirrors.toml:4:15: defaults.concurrency must be between 1 and 64"),
            ("", "nothing to mirror"),
            ("[[mirror]]\nsource = \"x.io/a:1\"\ntags = [\"2\"]\ntarget = \"r.io/a\"\n", "mirrors.toml:2:10: invalid image reference \"x.io/a:1\": names a tag"),
        ];
        for (text, expected) in cases {
            match resolve_with(text, &[]) {
                Ok(config) if expected.is_empty() => {
                    assert_eq!(config.jobs.len(), 1, "duplicates collapse")
                }
                Ok(_) => panic!("accepted {text:?}"),
                Err(err) => assert!(err.contains(expected), "{text:?}\n{err}"),
            }
        }
    }

    #[test]
    fn schedule_name_and_server_refusals_point_at_the_value() {
        let base = "[defaults]\ntarget = \"r.io\"\n";
        let image = "[[mirror]]\nsource = \"z:1\"\n";
        for (bad, expected) in [
            ("schedule = \"0 3 * *\"\n", "mirrors.toml:3:12: defaults.schedule: schedule \"0 3 * *\" has 4 fields"),
            ("timezone = \"Berlin\"\n", "mirrors.toml:3:12: defaults.timezone: unknown time zone \"Berlin\""),
            ("shutdown_grace = \"soon\"\n", "mirrors.toml:3:18: defaults.shutdown_grace:"),
            ("[[mirror]]\nsource = \"a:1\"\nschedule = \"@sometimes\"\n", "mirrors.toml:5:12: mirror.schedule: schedule \"@sometimes\" is not a valid cron expression"),
            ("[[mirror]]\nsource = \"a:1\"\n[[mirror]]\nsource = \"a:1\"\ntarget = \"q.io/a\"\n", "mirrors.toml:6:10: two mirrors are named \"a:1\" (the other is on line 4)"),
            ("[server]\nlisten = \"localhost\"\n", "mirrors.toml:4:10: server.listen: \"localhost\" is not an address and port"),
            ("[server]\nlisten = \"127.0.0.1:9090\"\nsync_token = \"${EMPTY}\"\n", "mirrors.toml:5:14: server.sync_token is empty"),
            ("[server]\nlisten = \"127.0.0.1:9090\"\nport = 1\n", "unknown key `port`"),
        ] {
            let err = resolve_with(&format!("{base}{bad}{image}"), &[("EMPTY", "")]).unwrap_err();
            assert!(err.contains(expected), "{bad:?}\n{err}");
        }
        let text = format!(
            "{base}[server]\nlisten = \"127.0.0.1:9090\"\nwebhook_secret = \"${{HOOK}}\"\n{image}"
        );
        let config = resolve_with(&text, &[("HOOK", "s3cret")]).unwrap();
        let server = config.server.unwrap();
        assert_eq!(server.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(server.webhook_secret.unwrap().expose(), "s3cret");
        assert!(server.sync_token.is_none());
    }
}
