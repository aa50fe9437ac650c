//! BuildKit (`docker buildx`, `buildctl`): `buildkitd.toml`, a `[registry."<registry>"]` per
//! source registry whose `mirrors` name the mirror (host and path), and the mirror's own
//! `[registry."<host>"]` for plain HTTP or its CA.

use super::{quoted, File, Route};

pub(super) fn files(routes: &[Route]) -> Vec<File> {
    let Some(first) = routes.first() else {
        return Vec::new();
    };
    let mut content = String::from(
        "# Image pulls of builds (FROM, --mount=from=) try the mirror first, then the registry.\n",
    );
    for route in routes {
        let mirrors: Vec<String> = route
            .mirrors
            .iter()
            .map(|m| quoted(&m.location()))
            .collect();
        content.push_str(&format!(
            "\n[registry.{}]\n  mirrors = [{}]\n",
            quoted(&route.registry),
            mirrors.join(", ")
        ));
    }
    // Each mirror host's own settings: plain HTTP, or its CA.
    for mirror in &first.mirrors {
        let plain = mirror.scheme == "http";
        if !plain && mirror.ca.is_none() {
            continue;
        }
        content.push_str(&format!("\n[registry.{}]\n", quoted(&mirror.host)));
        if plain {
            content.push_str("  http = true\n");
        }
        if let Some(ca) = &mirror.ca {
            content.push_str(&format!(
                "  ca = [{}]  # copy the CA there on the build host\n",
                quoted(&format!(
                    "/etc/buildkit/certs/{}/{}",
                    mirror.host,
                    ca.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "ca.pem".into())
                ))
            ));
        }
    }
    vec![File {
        path: "buildkit/buildkitd.toml".into(),
        install_to: "merge into /etc/buildkit/buildkitd.toml".into(),
        content,
    }]
}
