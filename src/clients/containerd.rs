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
const CA: &str = "regmirror-ca";

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
        for (n, mirror) in route.mirrors.iter().enumerate() {
            files.extend(ca_file(
                mirror,
                format!("{dir}/{CA}-{n}.pem"),
                format!("{install_dir}/{CA}-{n}.pem"),
            ));
        }
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
         server = {}\n",
        quoted(&route.upstream),
        registry = route.registry,
    );
    for (n, mirror) in route.mirrors.iter().enumerate() {
        let host = if mirror.path.is_empty() {
            format!("{}://{}", mirror.scheme, mirror.host)
        } else {
            format!("{}://{}/v2/{}", mirror.scheme, mirror.host, mirror.path)
        };
        out.push_str(&format!("\n[host.{}]\n", quoted(&host)));
        out.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
        if !mirror.path.is_empty() {
            out.push_str("  override_path = true\n");
        }
        if mirror.ca.is_some() {
            out.push_str(&format!("  ca = {}\n", quoted(&format!("{CA}-{n}.pem"))));
        }
    }
    out
}
