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
        content.push_str(&format!(
            "\n[registry.{}]\n  mirrors = [{}]\n",
            quoted(&route.registry),
            quoted(&route.mirror_location())
        ));
    }
    let plain = first.mirror_scheme == "http";
    if plain || first.mirror_ca.is_some() {
        content.push_str(&format!("\n[registry.{}]\n", quoted(&first.mirror_host)));
        if plain {
            content.push_str("  http = true\n");
        }
        if let Some(ca) = &first.mirror_ca {
            content.push_str(&format!(
                "  ca = [{}]  # copy the CA there on the build host\n",
                quoted(&format!(
                    "/etc/buildkit/certs/{}/{}",
                    first.mirror_host,
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
