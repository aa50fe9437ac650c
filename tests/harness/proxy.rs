//! A reverse proxy in front of a real registry: it logs every request and applies fault
//! rules (canned answers, corrupted bodies, held requests) chosen by the test at runtime.
//!
//! Bodies are streamed both ways, never buffered whole. `Location` headers pointing at the
//! upstream are rewritten to point at the proxy, so clients keep talking through it. The
//! proxy runs on its own tokio runtime; its API is synchronous.
//!
//! Rules are consulted in order for each request; the first that returns `Some(action)`
//! decides, and a request no rule claims is forwarded. A new kind of misbehaviour (a Docker
//! Hub rate-limit simulator, say) is one more [`Rule`], not a change to the proxy.

use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;

use super::server::Server;

type BoxError = Box<dyn Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// What a rule sees of a request (the body is not available: it is streamed on).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: String,
    /// Path with query, e.g. `/v2/library/nginx/manifests/latest`.
    pub path: String,
    /// Request headers, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl RequestInfo {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Status sent to the client; 0 while held, or when the connection was closed unanswered.
    pub status: u16,
}

/// Which registry API endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/<repo>/manifests/<reference>`
    Manifest,
    /// `/v2/<repo>/blobs/<digest>`
    Blob,
    /// `/v2/<repo>/blobs/uploads/...`: POST starts an upload, PUT completes it.
    Upload,
    /// `/v2/<repo>/tags/list`
    Tags,
    /// Anything else (`/v2/_catalog`, ...).
    Other,
}

/// Parses `/v2/<repo>/<kind>/<rest>`; returns the endpoint, repository and the last part.
fn route(path: &str) -> (Endpoint, &str, &str) {
    let path = path.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return (Endpoint::Other, "", "");
    };
    if rest.is_empty() {
        return (Endpoint::Base, "", "");
    }
    if let Some((repo, _)) = rest.split_once("/blobs/uploads") {
        return (Endpoint::Upload, repo, "");
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return (Endpoint::Manifest, repo, reference);
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        return (Endpoint::Blob, repo, digest);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return (Endpoint::Tags, repo, "");
    }
    (Endpoint::Other, "", "")
}

/// The same classification helpers on [`RequestInfo`] (for rules) and [`Logged`] (for counts).
macro_rules! classify {
    ($type:ty) => {
        impl $type {
            pub fn endpoint(&self) -> Endpoint {
                route(&self.path).0
            }

            /// Repository name, e.g. `library/nginx`; empty for `/v2/` and unknown paths.
            pub fn repo(&self) -> &str {
                route(&self.path).1
            }

            /// Tag or digest of a manifest request, digest of a blob request, else empty.
            pub fn reference(&self) -> &str {
                route(&self.path).2
            }

            fn is(&self, method: &str, endpoint: Endpoint) -> bool {
                self.method == method && self.endpoint() == endpoint
            }

            pub fn is_manifest_get(&self) -> bool {
                self.is("GET", Endpoint::Manifest)
            }

            pub fn is_manifest_head(&self) -> bool {
                self.is("HEAD", Endpoint::Manifest)
            }

            pub fn is_manifest_put(&self) -> bool {
                self.is("PUT", Endpoint::Manifest)
            }

            pub fn is_blob_get(&self) -> bool {
                self.is("GET", Endpoint::Blob)
            }

            pub fn is_blob_head(&self) -> bool {
                self.is("HEAD", Endpoint::Blob)
            }

            /// `POST .../blobs/uploads/` (including cross-repository mounts).
            pub fn is_upload_start(&self) -> bool {
                self.is("POST", Endpoint::Upload)
            }

            /// The `PUT` that completes an upload: one per blob written.
            pub fn is_blob_put(&self) -> bool {
                self.is("PUT", Endpoint::Upload)
            }
        }
    };
}

classify!(RequestInfo);
classify!(Logged);

/// What the proxy does with a request.
pub enum Action {
    /// Pass it to the upstream and the answer back.
    Forward,
    /// Forward, then add these headers to the response (e.g. `ratelimit-remaining`).
    ForwardWithHeaders(Vec<(String, String)>),
    /// Forward, then drop these headers from the response (e.g. `location`, as ECR does).
    ForwardWithout(Vec<String>),
    /// Answer without asking the upstream.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forward, but flip one byte of the response body; length and headers are kept, so the
    /// client receives bytes that do not match their digest.
    CorruptBody,
    /// Close the connection without answering, like a network failure.
    Disconnect,
    /// Park the request until the test releases it (see [`Proxy::hold_on`]).
    Hold(Gate),
    /// Wait this long, then forward: a registry farther away than loopback.
    Delay(Duration),
    /// Forward over a network link: each answer starts after the link's delay, and every
    /// answer given through the same [`Link`] shares its bandwidth.
    Over(Arc<Link>),
    /// Forward, read the whole answer (small ones only: tag lists, manifests) and send the
    /// client what `edit` makes of it.
    Rewrite(Box<dyn FnOnce(Answer) -> Answer + Send>),
}

/// A network link between a registry and its clients, for [`Action::Over`]: a delay before
/// each answer, and a bandwidth that answers' bodies share, byte by byte in the order they
/// arrive, as on one wire.
#[derive(Debug)]
pub struct Link {
    delay: Duration,
    bytes_per_second: f64,
    /// When the wire is next free.
    free_at: Mutex<tokio::time::Instant>,
}

impl Link {
    pub fn new(delay: Duration, bytes_per_second: u64) -> Arc<Link> {
        Arc::new(Link {
            delay,
            bytes_per_second: bytes_per_second as f64,
            free_at: Mutex::new(tokio::time::Instant::now()),
        })
    }

    /// When `len` more bytes have crossed the link, reserving their time on it.
    fn reserve(&self, len: usize) -> tokio::time::Instant {
        let mut free_at = self.free_at.lock().unwrap();
        let start = (*free_at).max(tokio::time::Instant::now());
        *free_at = start + Duration::from_secs_f64(len as f64 / self.bytes_per_second);
        *free_at
    }
}

/// A whole answer, for [`Action::Rewrite`].
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Headers, names in lower case (hop-by-hop ones and `content-length` left out).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Forward => f.write_str("Forward"),
            Action::ForwardWithHeaders(h) => f.debug_tuple("ForwardWithHeaders").field(h).finish(),
            Action::ForwardWithout(h) => f.debug_tuple("ForwardWithout").field(h).finish(),
            Action::Respond { status, .. } => f
                .debug_struct("Respond")
                .field("status", status)
                .finish_non_exhaustive(),
            Action::CorruptBody => f.write_str("CorruptBody"),
            Action::Disconnect => f.write_str("Disconnect"),
            Action::Hold(gate) => f.debug_tuple("Hold").field(gate).finish(),
            Action::Delay(d) => f.debug_tuple("Delay").field(d).finish(),
            Action::Over(link) => f.debug_tuple("Over").field(link).finish(),
            Action::Rewrite(_) => f.write_str("Rewrite(..)"),
        }
    }
}

impl Action {
    /// A registry-style error answer: `{"errors":[{"code":..,"message":..}]}`.
    pub fn error(status: u16, code: &str, message: &str) -> Action {
        let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
        Action::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// Decides what to do with a request; `None` leaves the decision to later rules.
///
/// Rules run under the proxy's rule lock: they must not call back into the [`Proxy`].
pub trait Rule: Send {
    fn decide(&mut self, request: &RequestInfo) -> Option<Action>;
}

impl<F> Rule for F
where
    F: FnMut(&RequestInfo) -> Option<Action> + Send,
{
    fn decide(&mut self, request: &RequestInfo) -> Option<Action> {
        self(request)
    }
}

/// Corrupts the body of every `GET /v2/<any repo>/blobs/<digest>` response.
pub fn corrupt_blob(digest: &str) -> impl Rule {
    let digest = digest.to_owned();
    move |request: &RequestInfo| {
        (request.is_blob_get() && request.reference() == digest).then_some(Action::CorruptBody)
    }
}

/// Answers requests matching `predicate` with a registry error of `status`.
pub fn fail_with(predicate: impl Fn(&RequestInfo) -> bool + Send, status: u16) -> impl Rule {
    move |request: &RequestInfo| {
        predicate(request).then(|| Action::error(status, "INJECTED", "fault injected by test"))
    }
}

/// Lets `rule` decide at most `times` requests, then steps aside (e.g. corrupt once, so the
/// client's retry succeeds).
pub fn times(times: usize, mut rule: impl Rule) -> impl Rule {
    let mut left = times;
    move |request: &RequestInfo| {
        if left == 0 {
            return None;
        }
        let action = rule.decide(request)?;
        left -= 1;
        Some(action)
    }
}

/// Shared between a held request and its [`Holder`].
#[derive(Debug)]
struct GateState {
    arrived: Mutex<bool>,
    arrival: Condvar,
    release: watch::Sender<Release>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Pending,
    Forward,
    Disconnect,
}

/// The proxy's side of a hold; made by [`Proxy::hold_on`].
#[derive(Debug, Clone)]
pub struct Gate(Arc<GateState>);

/// The test's side of a hold: learn when the request arrived, then release or drop it.
///
/// Dropping the holder without [`Holder::release`] closes the held request's connection
/// without forwarding it, and disarms the hold if nothing arrived yet.
#[derive(Debug)]
pub struct Holder(Arc<GateState>);

impl Holder {
    /// Waits until a matching request is held; `false` if none came within `timeout`.
    pub fn wait(&self, timeout: Duration) -> bool {
        let arrived = self.0.arrived.lock().unwrap();
        let (arrived, _) = self
            .0
            .arrival
            .wait_timeout_while(arrived, timeout, |arrived| !*arrived)
            .unwrap();
        *arrived
    }

    /// Whether the request has arrived (without waiting).
    pub fn arrived(&self) -> bool {
        *self.0.arrived.lock().unwrap()
    }

    /// Forwards the held request (or the next matching one, if none arrived yet).
    pub fn release(self) {
        self.0.release.send_replace(Release::Forward);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.0.release.send_if_modified(|release| {
            let pending = *release == Release::Pending;
            if pending {
                *release = Release::Disconnect;
            }
            pending
        });
    }
}

/// State shared by the proxy's connections.
struct Shared {
    /// `127.0.0.1:PORT` of the registry behind the proxy.
    upstream: String,
    /// `127.0.0.1:PORT` of the proxy, for rewriting `Location`.
    host: String,
    log: Mutex<Vec<Logged>>,
    rules: Mutex<Vec<Box<dyn Rule>>>,
    client: reqwest::Client,
    /// TCP connections accepted so far.
    connections: AtomicUsize,
    /// Set by [`Proxy::start_under`]: the path the API is served under, as a proxy registry
    /// (Artifactory's `/v2/docker-remote/...`) serves it.
    prefix: Option<String>,
}

/// A running proxy; shut down (held requests dropped) when dropped.
pub struct Proxy {
    shared: Arc<Shared>,
    /// Runs the accept loop and connections.
    _server: Server,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.shared.host)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy on a random loopback port forwarding to `upstream_host` (`host:port`).
    pub fn start(upstream_host: &str) -> Proxy {
        Proxy::serve(upstream_host, None)
    }

    /// A proxy that serves the registry's API under a path, as proxy registries do:
    /// `/v2/<prefix>/<repo>/…` is forwarded as `/v2/<repo>/…`, `/v2/` as is, anything else is
    /// answered 404, and upload `Location`s are rewritten back under the prefix.
    pub fn start_under(upstream_host: &str, prefix: &str) -> Proxy {
        Proxy::serve(upstream_host, Some(prefix.trim_matches('/').to_owned()))
    }

    fn serve(upstream_host: &str, prefix: Option<String>) -> Proxy {
        let bound = Server::bind("test-proxy");
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build proxy client");
        let shared = Arc::new(Shared {
            upstream: upstream_host.to_owned(),
            host: bound.host.clone(),
            log: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            client,
            connections: AtomicUsize::new(0),
            prefix,
        });
        let counted = Arc::clone(&shared);
        let serving = Arc::clone(&shared);
        let server = bound.serve(
            move || {
                counted.connections.fetch_add(1, Ordering::Relaxed);
            },
            move |request| handle(Arc::clone(&serving), request),
        );
        Proxy {
            shared,
            _server: server,
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> &str {
        &self.shared.host
    }

    /// `127.0.0.1:PORT` of the registry behind it.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// TCP connections accepted since the proxy started: with the request count, how well a
    /// client reuses its connections.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    pub fn count(&self, predicate: impl Fn(&Logged) -> bool) -> usize {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| predicate(r))
            .count()
    }

    /// Manifest GETs: what Docker Hub counts as pulls.
    pub fn manifest_gets(&self) -> usize {
        self.count(Logged::is_manifest_get)
    }

    pub fn manifest_heads(&self) -> usize {
        self.count(Logged::is_manifest_head)
    }

    pub fn manifest_puts(&self) -> usize {
        self.count(Logged::is_manifest_put)
    }

    pub fn blob_gets(&self) -> usize {
        self.count(Logged::is_blob_get)
    }

    /// Completed blob uploads (`PUT .../blobs/uploads/...`).
    pub fn blob_puts(&self) -> usize {
        self.count(Logged::is_blob_put)
    }

    /// Appends a rule; earlier rules take precedence.
    pub fn add_rule(&self, rule: impl Rule + 'static) {
        self.shared.rules.lock().unwrap().push(Box::new(rule));
    }

    /// Removes every rule (holds included): from now on everything is forwarded.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Holds the first request matching `predicate` (ahead of all other rules) until the
    /// returned [`Holder`] releases it. Typical use: wait for it, SIGKILL the client, drop.
    pub fn hold_on(&self, predicate: impl Fn(&RequestInfo) -> bool + Send + 'static) -> Holder {
        let state = Arc::new(GateState {
            arrived: Mutex::new(false),
            arrival: Condvar::new(),
            release: watch::Sender::new(Release::Pending),
        });
        let weak: Weak<GateState> = Arc::downgrade(&state);
        let mut fired = false;
        let rule = move |request: &RequestInfo| {
            if fired || !predicate(request) {
                return None;
            }
            // A dropped holder disarms the hold.
            let state = weak.upgrade()?;
            fired = true;
            Some(Action::Hold(Gate(state)))
        };
        self.shared.rules.lock().unwrap().insert(0, Box::new(rule));
        Holder(state)
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let info = RequestInfo {
        method: request.method().to_string(),
        path: request.uri().path_and_query().map_or_else(
            || request.uri().path().to_owned(),
            |p| p.as_str().to_owned(),
        ),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
    };
    let entry = {
        let mut log = shared.log.lock().unwrap();
        log.push(Logged {
            method: info.method.clone(),
            path: info.path.clone(),
            status: 0,
        });
        log.len() - 1
    };
    let action = decide(&shared, &info);
    let response = match action {
        Action::Forward => forward(&shared, request, Edit::default()).await,
        Action::ForwardWithHeaders(add) => {
            let edit = Edit {
                add,
                ..Edit::default()
            };
            forward(&shared, request, edit).await
        }
        Action::ForwardWithout(remove) => {
            let edit = Edit {
                remove,
                ..Edit::default()
            };
            forward(&shared, request, edit).await
        }
        Action::CorruptBody => {
            let edit = Edit {
                corrupt: true,
                ..Edit::default()
            };
            forward(&shared, request, edit).await
        }
        Action::Respond {
            status,
            headers,
            body,
        } => Ok(respond(status, headers, body)),
        Action::Disconnect => Err("disconnect injected by test".into()),
        Action::Rewrite(edit) => rewrite(&shared, request, edit).await,
        Action::Delay(delay) => {
            tokio::time::sleep(delay).await;
            forward(&shared, request, Edit::default()).await
        }
        Action::Over(link) => {
            tokio::time::sleep(link.delay).await;
            let edit = Edit {
                link: Some(link),
                ..Edit::default()
            };
            forward(&shared, request, edit).await
        }
        Action::Hold(Gate(state)) => {
            *state.arrived.lock().unwrap() = true;
            state.arrival.notify_all();
            let mut release = state.release.subscribe();
            let decision = release
                .wait_for(|release| *release != Release::Pending)
                .await
                .map(|release| *release);
            drop(state);
            match decision {
                Ok(Release::Forward) => forward(&shared, request, Edit::default()).await,
                _ => Err("held request dropped by test".into()),
            }
        }
    }?;
    // The log is updated before the client sees the answer, so a finished client run has a
    // complete log.
    if let Some(logged) = shared.log.lock().unwrap().get_mut(entry) {
        logged.status = response.status().as_u16();
    }
    Ok(response)
}

fn decide(shared: &Shared, info: &RequestInfo) -> Action {
    let mut rules = shared.rules.lock().unwrap();
    rules
        .iter_mut()
        .find_map(|rule| rule.decide(info))
        .unwrap_or(Action::Forward)
}

fn respond(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(body))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).expect("valid status code");
    add_headers(response.headers_mut(), headers);
    response
}

fn add_headers(map: &mut hyper::HeaderMap, headers: Vec<(String, String)>) {
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = HeaderValue::from_str(&value).expect("valid header value");
        map.append(name, value);
    }
}

/// Headers that describe one connection, not the message: never copied across.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// What a forwarded response gets changed.
#[derive(Default)]
struct Edit {
    /// Headers added.
    add: Vec<(String, String)>,
    /// Headers dropped (lower-case names).
    remove: Vec<String>,
    /// One body byte flipped.
    corrupt: bool,
    /// The body paced to this link's bandwidth.
    link: Option<Arc<Link>>,
}

/// Forwards `request`, then answers with what `edit` makes of the whole upstream answer.
async fn rewrite(
    shared: &Shared,
    request: Request<Incoming>,
    edit: Box<dyn FnOnce(Answer) -> Answer + Send>,
) -> Result<Response<ProxyBody>, BoxError> {
    let response = forward(shared, request, Edit::default()).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != hyper::header::CONTENT_LENGTH)
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let answer = edit(Answer {
        status: parts.status.as_u16(),
        headers,
        body,
    });
    Ok(respond(answer.status, answer.headers, answer.body))
}

async fn forward(
    shared: &Shared,
    request: Request<Incoming>,
    edit: Edit,
) -> Result<Response<ProxyBody>, BoxError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = match &shared.prefix {
        None => path.to_owned(),
        Some(_) if path == "/v2/" || path.starts_with("/v2/?") => path.to_owned(),
        Some(prefix) => match path.strip_prefix(&format!("/v2/{prefix}/")) {
            Some(rest) => format!("/v2/{rest}"),
            None => return Ok(respond(404, Vec::new(), b"not under the prefix".to_vec())),
        },
    };
    let url = format!("http://{}{}", shared.upstream, path);
    let mut upstream_request = shared.client.request(parts.method, url);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != hyper::header::HOST {
            upstream_request = upstream_request.header(name, value);
        }
    }
    if !body.is_end_stream() {
        // Streams the request body; its Content-Length, if any, is kept.
        upstream_request = upstream_request.body(reqwest::Body::wrap(body));
    }
    let upstream_response = match upstream_request.send().await {
        Ok(response) => response,
        Err(e) => {
            let message = format!("proxy could not reach {}: {e}", shared.upstream);
            return Ok(respond(502, Vec::new(), message.into_bytes()));
        }
    };
    let (mut parts, body) = Response::<reqwest::Body>::from(upstream_response).into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    if let Some(location) = parts.headers.get_mut(hyper::header::LOCATION) {
        let upstream_prefix = format!("http://{}", shared.upstream);
        let text = location.to_str().unwrap_or_default().to_owned();
        let rest = text.strip_prefix(&upstream_prefix).unwrap_or(&text);
        if rest.starts_with('/') {
            let rest = match (&shared.prefix, rest.strip_prefix("/v2/")) {
                (Some(prefix), Some(api)) => format!("/v2/{prefix}/{api}"),
                _ => rest.to_owned(),
            };
            let rewritten = format!("http://{}{}", shared.host, rest);
            *location = HeaderValue::from_str(&rewritten).expect("valid Location");
        }
    }
    add_headers(&mut parts.headers, edit.add);
    for name in &edit.remove {
        parts.headers.remove(name.as_str());
    }
    let body = body.map_err(BoxError::from);
    let body = if edit.corrupt {
        let mut flipped = false;
        body.map_frame(move |frame| {
            frame.map_data(|data: Bytes| {
                if flipped || data.is_empty() {
                    return data;
                }
                flipped = true;
                let mut bytes = data.to_vec();
                bytes[0] ^= 0xff;
                Bytes::from(bytes)
            })
        })
        .boxed()
    } else {
        body.boxed()
    };
    let body = match edit.link {
        Some(link) => paced(body, link),
        None => body,
    };
    Ok(Response::from_parts(parts, body))
}

/// `body`, each frame of data handed on once its bytes have crossed `link`.
fn paced(body: ProxyBody, link: Arc<Link>) -> ProxyBody {
    let frames = futures_util::stream::unfold(body, move |mut body| {
        let link = Arc::clone(&link);
        async move {
            let frame = body.frame().await?;
            if let Some(data) = frame.as_ref().ok().and_then(|f| f.data_ref()) {
                tokio::time::sleep_until(link.reserve(data.len())).await;
            }
            Some((frame, body))
        }
    });
    StreamBody::new(frames).boxed()
}

/// Answers `GET /v2/<repo>/referrers/<digest>` from `listed` (digest → descriptors), as a
/// registry with the referrers API does; everything else goes to the registry behind.
pub fn referrers_api(listed: Arc<Mutex<Vec<(String, serde_json::Value)>>>) -> impl Rule {
    move |request: &RequestInfo| {
        let path = request.path.split('?').next().unwrap_or_default();
        let (_, digest) = path.strip_prefix("/v2/")?.split_once("/referrers/")?;
        let manifests: Vec<serde_json::Value> = listed
            .lock()
            .unwrap()
            .iter()
            .filter(|(subject, _)| subject == digest)
            .map(|(_, descriptor)| descriptor.clone())
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        Some(Action::Respond {
            status: 200,
            headers: vec![(
                "content-type".into(),
                "application/vnd.oci.image.index.v1+json".into(),
            )],
            body: index.to_string().into_bytes(),
        })
    }
}
