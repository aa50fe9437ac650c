//! containerd (and so the kubelets that use it, k3s, EKS and kind nodes): a
//! `certs.d/<registry>/hosts.toml` per source registry, read from the directory its CRI
//! plugin's `config_path` names and from `ctr --hosts-dir`.
//!
//! A host URL with a path is taken as the registry API's root when `override_path = true`:
//! `http://m/v2/mirror/docker.io` makes containerd ask `GET
//! /v2/mirror/docker.io/library/nginx/manifests/…`. Hosts are tried in order and `server`,
//! the upstream, last.

use super::{ca_file, quoted, File, Route};

/// Where containerd's CRI plugin reads hosts.toml files from, in the snippets below.
const CERTS_D: &str = "/etc/containerd/certs.d";
/// The mirror's CA, beside each hosts.toml that names it (relative paths are read from there).
const CA: &str = "regmirror-ca.pem";

pub(super) fn files(routes: &[Route]) -> Vec<File> {
    let mut files = Vec::new();
    for route in routes {
        let dir = format!("containerd/certs.d/{}", route.registry);
        let install_dir = format!("{CERTS_D}/{}", route.registry);
        files.push(File {
            path: format!("{dir}/hosts.toml"),
            install_to: format!("{install_dir}/hosts.toml"),
            content: hosts_toml(route),
        });
        files.extend(ca_file(
            route,
            format!("{dir}/{CA}"),
            format!("{install_dir}/{CA}"),
        ));
    }
    if !routes.is_empty() {
        files.push(File {
            path: "containerd/config-1.x.toml".into(),
            install_to: "merge into /etc/containerd/config.toml (containerd 1.x, version = 2)"
                .into(),
            content: format!(
                "# containerd 1.x: read registry hosts from {CERTS_D}, then restart containerd.\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {}\n",
                quoted(CERTS_D)
            ),
        });
        files.push(File {
            path: "containerd/config-2.x.toml".into(),
            install_to: "merge into /etc/containerd/config.toml (containerd 2.x, version = 3)"
                .into(),
            content: format!(
                "# containerd 2.x: read registry hosts from {CERTS_D}, then restart containerd.\n\
                 [plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = {}\n",
                quoted(CERTS_D)
            ),
        });
    }
    files
}

fn hosts_toml(route: &Route) -> String {
    let mut out = format!(
        "# Pulls of {registry} images try the mirror first, then {registry} itself.\n\
         server = {}\n\n",
        quoted(&route.upstream),
        registry = route.registry,
    );
    let host = if route.mirror_path.is_empty() {
        format!("{}://{}", route.mirror_scheme, route.mirror_host)
    } else {
        format!(
            "{}://{}/v2/{}",
            route.mirror_scheme, route.mirror_host, route.mirror_path
        )
    };
    out.push_str(&format!("[host.{}]\n", quoted(&host)));
    out.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
    if !route.mirror_path.is_empty() {
        out.push_str("  override_path = true\n");
    }
    if route.mirror_ca.is_some() {
        out.push_str(&format!("  ca = {}\n", quoted(CA)));
    }
    out
}
