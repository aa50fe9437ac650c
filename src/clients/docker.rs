//! Docker Engine: `registry-mirrors` in `daemon.json`. It takes mirrors for Docker Hub only,
//! and a mirror URL with a path is refused, so it can work only when Docker Hub's images sit
//! at the mirror's root (`defaults.target` a bare host, `mirror_prefix = ""` for docker.io).

use super::{File, Route};
use crate::reference::DOCKER_HUB;

/// The daemon.json, or why Docker Engine cannot use this mirror.
pub(super) fn files(routes: &[Route]) -> Result<Vec<File>, String> {
    let Some(hub) = routes.iter().find(|r| r.registry == DOCKER_HUB) else {
        return Err(
            "Docker Engine: its registry-mirrors apply to Docker Hub only, and no Docker Hub \
             image goes under defaults.target"
                .to_string(),
        );
    };
    if let Some(with_path) = hub.mirrors.iter().find(|m| !m.path.is_empty()) {
        return Err(format!(
            "Docker Engine: registry-mirrors refuses a mirror with a path, and Docker Hub's images \
             are under /{} here; for Docker Engine set defaults.target to the bare host and \
             mirror_prefix = \"\" in [registries.\"docker.io\"]",
            with_path.path
        ));
    }
    let mut daemon = serde_json::json!({
        "registry-mirrors": hub
            .mirrors
            .iter()
            .map(|m| format!("{}://{}", m.scheme, m.host))
            .collect::<Vec<_>>(),
    });
    let insecure: Vec<&str> = hub
        .mirrors
        .iter()
        .filter(|m| m.scheme == "http")
        .map(|m| m.host.as_str())
        .collect();
    if !insecure.is_empty() {
        daemon["insecure-registries"] = serde_json::json!(insecure);
    }
    Ok(vec![File {
        path: "docker/daemon.json".into(),
        install_to: "merge into /etc/docker/daemon.json, then restart dockerd".into(),
        content: format!(
            "{}\n",
            serde_json::to_string_pretty(&daemon).expect("JSON of strings")
        ),
    }])
}
