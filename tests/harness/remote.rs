//! Talking to a registry from a test: where ([`Remote`]: host, optional basic auth, and for a
//! TLS registry a client that trusts its CA), the upload primitives
//! [`super::image::Image::push`] uses, and the read-back helpers that check a mirror's work,
//! down to [`check_complete`], which walks a whole image graph.
//!
//! Helpers panic on anything but the answers a test can expect (200/201/202, or 404 mapped to
//! `None`/`false`), with the registry's error body in the message.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use reqwest::blocking::{Client, ClientBuilder, RequestBuilder, Response};
use reqwest::Method;
use serde_json::Value;

use super::image::{
    sha256_digest, Manifest, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use super::proxy::Proxy;
use super::registry::Registry;

/// `Accept` for manifest requests. Distribution answers 404 to a GET or HEAD of an OCI
/// manifest unless the OCI types are listed, so always send all four.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Where to send requests: a `host:port`, optional basic-auth credentials, and whether to
/// speak HTTPS (with a client trusting the registry's CA) or plain HTTP.
///
/// Converts from `&str`/`String` (plain HTTP, no auth), `&Registry` (its credentials and TLS,
/// if any) and `&Proxy` (no auth; use [`Remote::with_auth`] for a proxy in front of an
/// htpasswd registry).
#[derive(Clone)]
pub struct Remote {
    host: String,
    auth: Option<(String, String)>,
    /// HTTPS through this client when set; plain HTTP through [`plain_client`] otherwise.
    tls: Option<Client>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.auth.as_ref().map(|(user, _)| user.as_str());
        f.debug_struct("Remote")
            .field("host", &self.host)
            .field("user", &user)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Remote {
    pub fn new(host: impl Into<String>) -> Remote {
        Remote {
            host: host.into(),
            auth: None,
            tls: None,
        }
    }

    pub fn with_auth(mut self, user: &str, password: &str) -> Remote {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Speak HTTPS through `client`, which must trust the registry's certificate.
    pub fn with_tls(mut self, client: Client) -> Remote {
        self.tls = Some(client);
        self
    }

    fn request(&self, method: Method, path_or_url: &str) -> RequestBuilder {
        let (client, scheme) = match &self.tls {
            Some(client) => (client, "https"),
            None => (plain_client(), "http"),
        };
        let url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{scheme}://{}{}", self.host, path_or_url)
        };
        let request = client.request(method, url);
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }
}

impl From<&str> for Remote {
    fn from(host: &str) -> Remote {
        Remote::new(host)
    }
}

impl From<String> for Remote {
    fn from(host: String) -> Remote {
        Remote::new(host)
    }
}

impl From<&String> for Remote {
    fn from(host: &String) -> Remote {
        Remote::new(host.as_str())
    }
}

impl From<&Remote> for Remote {
    fn from(remote: &Remote) -> Remote {
        remote.clone()
    }
}

impl From<&Registry> for Remote {
    fn from(registry: &Registry) -> Remote {
        let mut remote = Remote::new(registry.host());
        if let Some((user, password)) = registry.credentials() {
            remote = remote.with_auth(user, password);
        }
        if let Some(client) = registry.tls_client() {
            remote = remote.with_tls(client.clone());
        }
        remote
    }
}

impl From<&Proxy> for Remote {
    fn from(proxy: &Proxy) -> Remote {
        Remote::new(proxy.host())
    }
}

/// How every harness client is set up: it never follows redirects, ignores proxy variables
/// (everything is on loopback), and trusts `ca_pem` (a PEM CA certificate) when given.
pub(super) fn client_builder(ca_pem: Option<&[u8]>) -> ClientBuilder {
    let builder = Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60));
    match ca_pem {
        Some(pem) => builder
            .add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA certificate PEM")),
        None => builder,
    }
}

/// One blocking client per test binary for every plain-HTTP registry.
pub(super) fn plain_client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        client_builder(None)
            .build()
            .expect("build blocking HTTP client")
    })
}

fn send(request: RequestBuilder, what: &str) -> Response {
    request
        .send()
        .unwrap_or_else(|e| panic!("{what}: request failed: {e}"))
}

fn fail(response: Response, what: &str) -> ! {
    let status = response.status();
    let body = response.text().unwrap_or_default();
    panic!("{what}: HTTP {status}: {body}")
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Monolithic upload: POST for a session, then one PUT of the whole blob with `digest=`.
pub(super) fn upload_blob(remote: &Remote, repo: &str, digest: &str, data: Bytes) {
    let what = format!("upload {repo}@{digest} to {}", remote.host);
    let response = send(
        remote.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/")),
        &what,
    );
    if response.status().as_u16() != 202 {
        fail(response, &what);
    }
    let location = header(&response, "location")
        .unwrap_or_else(|| panic!("{what}: 202 without a Location header"));
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{separator}digest={digest}");
    // Not form-urlencoded: distribution would parse the body as a form and lose it.
    let request = remote
        .request(Method::PUT, &url)
        .header("content-type", "application/octet-stream")
        .body(data);
    let response = send(request, &what);
    if response.status().as_u16() != 201 {
        fail(response, &what);
    }
}

/// PUT a manifest under `reference`; distribution needs `Content-Type` equal to its mediaType.
pub(super) fn put_manifest(remote: &Remote, repo: &str, reference: &str, manifest: &Manifest) {
    let what = format!("push manifest {repo}:{reference} to {}", remote.host);
    let request = remote
        .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
        .header("content-type", &manifest.media_type)
        .body(manifest.bytes.clone());
    let response = send(request, &what);
    if response.status().as_u16() != 201 {
        fail(response, &what);
    }
    let digest = header(&response, "docker-content-digest");
    assert_eq!(
        digest.as_deref(),
        Some(manifest.digest.as_str()),
        "{what}: registry reports another digest"
    );
}

/// The digest `reference` resolves to (from `Docker-Content-Digest`), or `None` on 404.
pub fn head_manifest(remote: impl Into<Remote>, repo: &str, reference: &str) -> Option<String> {
    head_manifest_or(remote.into(), repo, reference, |response, what| {
        fail(response, what)
    })
}

/// [`head_manifest`] for polling a tag that a copy may be writing at that moment: a 500 reads
/// as "not there yet", for the poll to ask again. distribution 2.8's filesystem storage
/// rewrites a tag's link file in place (truncate, then write), so a read in between answers
/// 500 (distribution#4478, fixed upstream by writing a temporary file and renaming it). A tag
/// that stays broken still fails the poll, when it gives up.
pub fn poll_manifest(remote: impl Into<Remote>, repo: &str, reference: &str) -> Option<String> {
    head_manifest_or(remote.into(), repo, reference, |response, what| {
        if response.status().as_u16() == 500 {
            None
        } else {
            fail(response, what)
        }
    })
}

fn head_manifest_or(
    remote: Remote,
    repo: &str,
    reference: &str,
    otherwise: impl FnOnce(Response, &str) -> Option<String>,
) -> Option<String> {
    let what = format!("HEAD {repo}:{reference} on {}", remote.host);
    let request = remote
        .request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT);
    let response = send(request, &what);
    match response.status().as_u16() {
        200 => Some(
            header(&response, "docker-content-digest")
                .unwrap_or_else(|| panic!("{what}: 200 without Docker-Content-Digest")),
        ),
        404 => None,
        _ => otherwise(response, &what),
    }
}

/// The manifest's bytes and `Content-Type`, or `None` on 404.
pub fn get_manifest(
    remote: impl Into<Remote>,
    repo: &str,
    reference: &str,
) -> Option<(Vec<u8>, String)> {
    let remote = remote.into();
    let what = format!("GET {repo}:{reference} on {}", remote.host);
    let request = remote
        .request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT);
    let response = send(request, &what);
    match response.status().as_u16() {
        200 => {
            let content_type = header(&response, "content-type").unwrap_or_default();
            let bytes = response
                .bytes()
                .unwrap_or_else(|e| panic!("{what}: reading body: {e}"));
            Some((bytes.to_vec(), content_type))
        }
        404 => None,
        _ => fail(response, &what),
    }
}

/// Whether `HEAD /v2/<repo>/blobs/<digest>` answers 200.
pub fn blob_exists(remote: impl Into<Remote>, repo: &str, digest: &str) -> bool {
    blob_size(&remote.into(), repo, digest).is_some()
}

/// A blob's content, or `None` on 404.
pub fn get_blob(remote: impl Into<Remote>, repo: &str, digest: &str) -> Option<Vec<u8>> {
    let remote = remote.into();
    let what = format!("GET blob {repo}@{digest} on {}", remote.host);
    let response = send(
        remote.request(Method::GET, &format!("/v2/{repo}/blobs/{digest}")),
        &what,
    );
    match response.status().as_u16() {
        200 => Some(
            response
                .bytes()
                .unwrap_or_else(|e| panic!("{what}: reading body: {e}"))
                .to_vec(),
        ),
        404 => None,
        _ => fail(response, &what),
    }
}

fn blob_size(remote: &Remote, repo: &str, digest: &str) -> Option<u64> {
    let what = format!("HEAD blob {repo}@{digest} on {}", remote.host);
    let response = send(
        remote.request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")),
        &what,
    );
    match response.status().as_u16() {
        200 => Some(
            header(&response, "content-length")
                .and_then(|length| length.parse().ok())
                .unwrap_or_else(|| panic!("{what}: 200 without a Content-Length")),
        ),
        404 => None,
        _ => fail(response, &what),
    }
}

/// The repository's tags, sorted; empty when the repository does not exist.
pub fn tags(remote: impl Into<Remote>, repo: &str) -> Vec<String> {
    let remote = remote.into();
    let what = format!("list tags of {repo} on {}", remote.host);
    let response = send(
        remote.request(Method::GET, &format!("/v2/{repo}/tags/list")),
        &what,
    );
    match response.status().as_u16() {
        200 => {}
        404 => return Vec::new(),
        _ => fail(response, &what),
    }
    let body: Value = serde_json::from_slice(&response.bytes().expect("read tags"))
        .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    let mut tags: Vec<String> = body["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|tag| tag.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Deletes the manifest `digest` (and so every tag pointing at it); `false` on 404.
pub fn delete_manifest(remote: impl Into<Remote>, repo: &str, digest: &str) -> bool {
    let remote = remote.into();
    let what = format!("DELETE {repo}@{digest} on {}", remote.host);
    let response = send(
        remote.request(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}")),
        &what,
    );
    match response.status().as_u16() {
        202 => true,
        404 => false,
        _ => fail(response, &what),
    }
}

/// Deletes the blob from `repo` (the registry unlinks it); `false` on 404. Handy to make a
/// target incomplete on purpose.
pub fn delete_blob(remote: impl Into<Remote>, repo: &str, digest: &str) -> bool {
    let remote = remote.into();
    let what = format!("DELETE blob {repo}@{digest} on {}", remote.host);
    let response = send(
        remote.request(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}")),
        &what,
    );
    match response.status().as_u16() {
        202 => true,
        404 => false,
        _ => fail(response, &what),
    }
}

/// Walks `reference` (index, children, configs, layers) and describes the first piece that is
/// missing, has the wrong size or media type, or whose bytes do not hash to its digest.
pub fn check_complete(
    remote: impl Into<Remote>,
    repo: &str,
    reference: &str,
) -> Result<(), String> {
    check_manifest(&remote.into(), repo, reference, None)
}

/// `expected` is the descriptor `(media type, size)` from the parent index, if any.
fn check_manifest(
    remote: &Remote,
    repo: &str,
    reference: &str,
    expected: Option<(&str, u64)>,
) -> Result<(), String> {
    let name = format!("{repo}:{reference}");
    let (bytes, content_type) = get_manifest(remote, repo, reference)
        .ok_or_else(|| format!("manifest {name} is missing"))?;
    let digest = sha256_digest(&bytes);
    if reference.starts_with("sha256:") && digest != reference {
        return Err(format!("manifest {name} has content with digest {digest}"));
    }
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("manifest {name} is not JSON: {e}"))?;
    let media_type = value["mediaType"].as_str().unwrap_or_default();
    if content_type != media_type {
        return Err(format!(
            "manifest {name} served as {content_type:?} but its mediaType is {media_type:?}"
        ));
    }
    if let Some((expected_type, expected_size)) = expected {
        if media_type != expected_type || bytes.len() as u64 != expected_size {
            return Err(format!(
                "manifest {name} is {media_type} of {} bytes; the index says {expected_type} \
                 of {expected_size} bytes",
                bytes.len()
            ));
        }
    }
    match media_type {
        OCI_INDEX | DOCKER_LIST => {
            for child in value["manifests"].as_array().into_iter().flatten() {
                let (child_type, child_digest, size) = descriptor(child, &name)?;
                check_manifest(remote, repo, child_digest, Some((child_type, size)))?;
            }
            Ok(())
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let layers = value["layers"].as_array().into_iter().flatten();
            for blob in std::iter::once(&value["config"]).chain(layers) {
                let (_, blob_digest, size) = descriptor(blob, &name)?;
                match blob_size(remote, repo, blob_digest) {
                    None => return Err(format!("blob {blob_digest} of {name} is missing")),
                    Some(actual) if actual != size => {
                        return Err(format!(
                            "blob {blob_digest} of {name} has {actual} bytes, expected {size}"
                        ))
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        }
        other => Err(format!("manifest {name} has unknown mediaType {other:?}")),
    }
}

fn descriptor<'a>(value: &'a Value, parent: &str) -> Result<(&'a str, &'a str, u64), String> {
    let media_type = value["mediaType"].as_str();
    let digest = value["digest"].as_str();
    let size = value["size"].as_u64();
    match (media_type, digest, size) {
        (Some(media_type), Some(digest), Some(size)) => Ok((media_type, digest, size)),
        _ => Err(format!(
            "manifest {parent} has a malformed descriptor: {value}"
        )),
    }
}
