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
    if !hub.mirror_path.is_empty() {
        return Err(format!(
            "Docker Engine: registry-mirrors refuses a mirror with a path, and Docker Hub's images \
             are under /{} here; for Docker Engine set defaults.target to the bare host and \
             mirror_prefix = \"\" in [registries.\"docker.io\"]",
            hub.mirror_path
        ));
    }
    let mut daemon = serde_json::json!({
        "registry-mirrors": [format!("{}://{}", hub.mirror_scheme, hub.mirror_host)],
    });
    if hub.mirror_scheme == "http" {
        daemon["insecure-registries"] = serde_json::json!([hub.mirror_host]);
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
