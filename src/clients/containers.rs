//! containers-registries.conf(5), read by CRI-O, podman, skopeo and buildah: one drop-in with
//! a `[[registry]]` per source registry and the mirror as its `[[registry.mirror]]`. Mirrors
//! apply to pulls by tag and digest; the registry's own `location` is tried after them.

use super::{ca_file, quoted, File, Route};

const DROP_IN: &str = "50-regmirror.conf";

pub(super) fn files(routes: &[Route]) -> Vec<File> {
    if routes.is_empty() {
        return Vec::new();
    }
    let mut content = String::from(
        "# Pulls of these registries' images try the mirror first, then the registry itself.\n",
    );
    for route in routes {
        content.push_str(&format!(
            "\n[[registry]]\nprefix = {registry}\nlocation = {registry}\n",
            registry = quoted(&route.registry),
        ));
        if route.upstream.starts_with("http://") {
            content.push_str("insecure = true\n");
        }
        for mirror in &route.mirrors {
            content.push_str(&format!(
                "\n[[registry.mirror]]\nlocation = {}\n",
                quoted(&mirror.location())
            ));
            if mirror.scheme == "http" {
                content.push_str("insecure = true\n");
            }
        }
    }
    let mut files = vec![File {
        path: format!("containers/registries.conf.d/{DROP_IN}"),
        install_to: format!("/etc/containers/registries.conf.d/{DROP_IN}"),
        content,
    }];
    // A CA per mirror host, the same for every route.
    if let Some(route) = routes.first() {
        for mirror in &route.mirrors {
            files.extend(ca_file(
                mirror,
                format!("containers/certs.d/{}/ca.crt", mirror.host),
                format!("/etc/containers/certs.d/{}/ca.crt", mirror.host),
            ));
        }
    }
    files
}
