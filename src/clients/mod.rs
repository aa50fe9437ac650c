//! `regmirror clients`: the settings that make container runtimes pull mirrored images from
//! the mirror by their upstream names, written from mirrors.toml.
//!
//! A runtime asks its mirror for `docker.io/library/nginx` as `library/nginx` under a path of
//! the mirror the settings name. That works only when the mirror keeps the source registry
//! and the full repository in its names, which is what `defaults.layout = "registry"` does:
//! `nginx:stable` → `<target>/docker.io/library/nginx:stable`. So the settings are made for
//! the images that go under `defaults.target` in that layout; an image with a `[[mirror]]`
//! target of its own cannot be found by its upstream name and is said so.
//!
//! One [`Route`] per source registry (where its pulls should go) feeds one file format per
//! runtime family: [`containerd`] (`certs.d/<registry>/hosts.toml`, what Kubernetes nodes
//! use), [`containers`] (`registries.conf.d` for CRI-O, podman, skopeo and buildah),
//! [`buildkit`] (`buildkitd.toml`) and [`docker`] (Docker Engine's `registry-mirrors`, which
//! can serve Docker Hub only, from a mirror with no path).

mod buildkit;
mod containerd;
mod containers;
mod docker;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{Config, DefaultTarget};
use crate::reference::{canonical_registry, Layout, DOCKER_HUB, DOCKER_HUB_API};

/// Where one source registry's pulls go: its mirrors in order (one per target of
/// `defaults.targets`), then itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The source registry as runtimes name it: `docker.io`, `ghcr.io`, `127.0.0.1:5001`.
    pub registry: String,
    /// Its own API, which runtimes fall back to: `https://registry-1.docker.io`.
    pub upstream: String,
    /// Never empty.
    pub mirrors: Vec<MirrorHost>,
}

/// One mirror, as runtimes reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorHost {
    /// `host[:port]`.
    pub host: String,
    /// `http` for a mirror spoken to in plain HTTP, else `https`.
    pub scheme: &'static str,
    /// The path under which the mirror keeps this registry's repositories
    /// (`mirror/docker.io`), empty when they sit at its root.
    pub path: String,
    /// A CA the mirror's certificate is signed by, when mirrors.toml names one (`ca_file`).
    pub ca: Option<PathBuf>,
}

impl MirrorHost {
    /// `host/path`, as registries.conf and BuildKit write a mirror.
    pub fn location(&self) -> String {
        if self.path.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{}", self.host, self.path)
        }
    }
}

/// One file of the settings, with where it goes on a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to `--out`: `containerd/certs.d/docker.io/hosts.toml`.
    pub path: String,
    /// Where it belongs on the machine that runs the runtime (a path, or what to merge it into).
    pub install_to: String,
    pub content: String,
}

/// Everything `regmirror clients` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub routes: Vec<Route>,
    pub files: Vec<File>,
    /// What the settings cannot do, said plainly: images no runtime can find by name,
    /// runtimes whose mirror settings cannot take this mirror.
    pub notes: Vec<String>,
}

/// Why no settings can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientsError {
    #[error("{0}")]
    Layout(String),
}

/// The runtime settings for `config`'s mirror.
pub fn settings(config: &Config) -> Result<Settings, ClientsError> {
    let Some(default_target) = config
        .default_target
        .as_ref()
        .filter(|t| t.layout == Layout::Registry)
    else {
        return Err(ClientsError::Layout(
            "runtimes find a mirrored image by its upstream name only when the mirror keeps \
             that name: set defaults.target and defaults.layout = \"registry\" (nginx:stable → \
             <target>/docker.io/library/nginx:stable), then run regmirror clients again"
                .to_string(),
        ));
    };
    let mut registries = BTreeSet::new();
    let mut notes = Vec::new();
    // An OCI image layout is a directory, not a registry a runtime can pull from.
    let layouts: Vec<String> = default_target
        .prefixes
        .iter()
        .filter(|p| p.is_layout())
        .map(ToString::to_string)
        .collect();
    if layouts.len() == default_target.prefixes.len() {
        return Err(ClientsError::Layout(format!(
            "defaults.target is an OCI image layout ({}), which runtimes cannot pull from: \
             run regmirror clients with the config of the registry the layout is imported into",
            layouts.join(", ")
        )));
    }
    if !layouts.is_empty() {
        notes.push(format!(
            "runtimes pull from the registry targets only; {} is an OCI image layout",
            layouts.join(", ")
        ));
    }
    let follows_layout = |source: &crate::reference::ImageRef, target: &str| {
        default_target
            .repositories_for(source)
            .is_ok_and(|all| all.iter().any(|r| r.to_string() == target))
    };
    for job in &config.jobs {
        if job.source.is_layout() {
            notes.push(format!(
                "{} is read from an OCI image layout: runtimes know no upstream registry for it",
                job.source
            ));
        } else if follows_layout(&job.source, &job.target.repo().to_string()) {
            registries.insert(canonical_registry(&job.source.registry).to_string());
        } else {
            notes.push(format!(
                "{} goes to {}, a target of its own: runtimes cannot find it by its upstream name",
                job.source, job.target
            ));
        }
    }
    for mirror in &config.mirrors {
        if let Some(selection) = &mirror.selection {
            let target = selection.targets_shown();
            if selection.source.is_layout() {
                notes.push(format!(
                    "mirror {}: read from an OCI image layout: runtimes know no upstream registry for it",
                    mirror.name
                ));
            } else if selection
                .targets
                .iter()
                .all(|t| follows_layout(&selection.source, &t.to_string()))
            {
                registries.insert(canonical_registry(&selection.source.registry).to_string());
            } else {
                notes.push(format!(
                    "mirror {}: its tags go to {target}, a target of its own: runtimes cannot find them by their upstream names",
                    mirror.name
                ));
            }
        }
    }
    if let Some(ssm) = &config.ssm {
        notes.push(format!(
            "the images listed in SSM parameter {} are read at each run: their registries get settings only once mirrors.toml names them",
            ssm.parameter
        ));
    }
    let mut routes = Vec::new();
    for registry in registries {
        routes.push(route(config, default_target, &registry).map_err(ClientsError::Layout)?);
    }
    let mut files = containerd::files(&routes);
    files.extend(containers::files(&routes));
    files.extend(buildkit::files(&routes));
    match docker::files(&routes) {
        Ok(docker) => files.extend(docker),
        Err(why) => notes.push(why),
    }
    notes.push(
        "the mirror holds only the tags regmirror mirrors: a runtime asking for any other tag \
         (or digest) gets 404 from it and falls back to the upstream registry, as the settings \
         list it last"
            .to_string(),
    );
    Ok(Settings {
        routes,
        files,
        notes,
    })
}

/// Where `registry`'s pulls go under `default_target`'s targets.
fn route(config: &Config, default_target: &DefaultTarget, registry: &str) -> Result<Route, String> {
    let dir = default_target.registry_dir(registry)?;
    let mirrors = default_target
        .prefixes
        .iter()
        .filter(|prefix| !prefix.is_layout())
        .map(|prefix| {
            let target_settings = config.registry(&prefix.registry);
            MirrorHost {
                host: prefix.registry.clone(),
                scheme: if target_settings.plain_http {
                    "http"
                } else {
                    "https"
                },
                path: [prefix.repository.as_str(), dir.as_str()]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join("/"),
                ca: target_settings.ca_file.clone(),
            }
        })
        .collect();
    let source_settings = config.registry(registry);
    let upstream = match registry {
        DOCKER_HUB => format!("https://{DOCKER_HUB_API}"),
        other if source_settings.plain_http => format!("http://{other}"),
        other => format!("https://{other}"),
    };
    Ok(Route {
        registry: registry.to_string(),
        upstream,
        mirrors,
    })
}

/// Writes every file under `dir` (and the mirror's CA beside the files that name it).
pub fn write(settings: &Settings, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for file in &settings.files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.content)?;
        written.push(path);
    }
    Ok(written)
}

/// Every file on one stream, each under a header line, then the notes.
pub fn render(settings: &Settings) -> String {
    let mut out = String::new();
    for file in &settings.files {
        out.push_str(&format!(
            "# ==> {} → {} <==\n{}\n",
            file.path, file.install_to, file.content
        ));
    }
    if !settings.notes.is_empty() {
        out.push_str("# ==> notes <==\n");
        for note in &settings.notes {
            out.push_str(&format!("# - {note}\n"));
        }
    }
    out
}

/// A mirror's CA as a file beside others: the `CERTIFICATE` blocks of the config's `ca_file`
/// and nothing else it holds. `None` when it has none or it cannot be read (the config loader
/// has checked it exists, holds a certificate and no key).
fn ca_file(mirror: &MirrorHost, path: String, install_to: String) -> Option<File> {
    let pem = std::fs::read_to_string(mirror.ca.as_ref()?).ok()?;
    let certificates = crate::config::pem::certificates(&pem);
    (!certificates.is_empty()).then_some(File {
        path,
        install_to,
        content: certificates,
    })
}

/// A TOML string, quoted.
fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(text: &str) -> Config {
        Config::from_bytes(
            Path::new("mirrors.toml"),
            text.as_bytes(),
            &Overrides::default(),
        )
        .unwrap()
    }

    fn file<'a>(settings: &'a Settings, path: &str) -> &'a str {
        &settings
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path} in {:?}", settings.files))
            .content
    }

    #[test]
    fn every_source_registry_gets_a_route_under_the_registry_layout() {
        let settings = settings(&config(
            r#"
images = ["nginx:stable", "ghcr.io/org/app:v1", "127.0.0.1:5001/team/app:1.0"]
[defaults]
target = "m.example.com/mirror"
layout = "registry"
[registries."docker.io"]
mirror_prefix = "docker-hub"
[[mirror]]
source = "ghcr.io/org/tool"
tags = ["v1"]
target = "m.example.com/tools/tool"
"#,
        ))
        .unwrap();
        let hub = file(&settings, "containerd/certs.d/docker.io/hosts.toml");
        assert!(
            hub.contains("server = \"https://registry-1.docker.io\""),
            "{hub}"
        );
        assert!(
            hub.contains("[host.\"https://m.example.com/v2/mirror/docker-hub\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"),
            "{hub}"
        );
        let local = file(&settings, "containerd/certs.d/127.0.0.1:5001/hosts.toml");
        assert!(
            local.contains("server = \"http://127.0.0.1:5001\""),
            "{local}"
        );
        assert!(local.contains("/v2/mirror/127.0.0.1-5001\"]"), "{local}");
        let conf = file(&settings, "containers/registries.conf.d/50-regmirror.conf");
        assert!(
            conf.contains("prefix = \"ghcr.io\"\nlocation = \"ghcr.io\"\n\n[[registry.mirror]]\nlocation = \"m.example.com/mirror/ghcr.io\"\n"),
            "{conf}"
        );
        assert_eq!(
            conf.matches("insecure = true").count(),
            1,
            "the loopback source only, not the HTTPS mirror: {conf}"
        );
        let buildkit = file(&settings, "buildkit/buildkitd.toml");
        assert!(
            buildkit.contains(
                "[registry.\"docker.io\"]\n  mirrors = [\"m.example.com/mirror/docker-hub\"]"
            ),
            "{buildkit}"
        );
        // Every generated TOML file parses.
        for f in settings
            .files
            .iter()
            .filter(|f| f.path.ends_with(".toml") || f.path.ends_with(".conf"))
        {
            f.content
                .parse::<toml::Table>()
                .unwrap_or_else(|e| panic!("{}: {e}", f.path));
        }
        assert!(
            settings
                .notes
                .iter()
                .any(|n| n.starts_with("ghcr.io/org/tool:v1 goes to m.example.com/tools/tool:v1")),
            "{:?}",
            settings.notes
        );
        assert!(
            settings
                .notes
                .iter()
                .any(|n| n
                    .starts_with("Docker Engine: registry-mirrors refuses a mirror with a path")),
            "{:?}",
            settings.notes
        );
    }

    #[test]
    fn docker_engine_gets_a_mirror_only_when_docker_hub_sits_at_the_root() {
        let settings = settings(&config(
            r#"
images = ["nginx:stable"]
[defaults]
target = "127.0.0.1:5000"
layout = "registry"
[registries."docker.io"]
mirror_prefix = ""
"#,
        ))
        .unwrap();
        let daemon: serde_json::Value =
            serde_json::from_str(file(&settings, "docker/daemon.json")).unwrap();
        assert_eq!(daemon["registry-mirrors"][0], "http://127.0.0.1:5000");
        assert_eq!(daemon["insecure-registries"][0], "127.0.0.1:5000");
        let hub = file(&settings, "containerd/certs.d/docker.io/hosts.toml");
        assert!(hub.contains("[host.\"http://127.0.0.1:5000\"]"), "{hub}");
        assert!(!hub.contains("override_path"), "{hub}");
    }

    #[test]
    fn the_path_layout_gets_no_settings_and_says_what_to_set() {
        let e = settings(&config(
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n",
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("defaults.layout = \"registry\""),
            "{e}"
        );
    }

    #[test]
    fn only_the_certificates_of_a_ca_file_reach_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert =
            "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ==\n-----END CERTIFICATE-----";
        std::fs::write(&ca, format!("subject=CN=mirror CA\n{cert}\n")).unwrap();
        let config = config(&format!(
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"m.example.com\"\nlayout = \"registry\"\n[registries.\"m.example.com\"]\nca_file = {:?}\n",
            ca.display().to_string()
        ));
        // The file gains a key after the config was loaded (and checked): it is not copied.
        let key =
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49Key==\n-----END PRIVATE KEY-----";
        std::fs::write(&ca, format!("subject=CN=mirror CA\n{cert}\n{key}\n")).unwrap();
        let settings = settings(&config).unwrap();
        let copies: Vec<&File> = settings
            .files
            .iter()
            .filter(|f| f.path.ends_with(".pem") || f.path.ends_with(".crt"))
            .collect();
        assert_eq!(copies.len(), 2, "{:?}", settings.files);
        for copy in copies {
            assert_eq!(copy.content, format!("{cert}\n"), "{}", copy.path);
        }
    }
}
