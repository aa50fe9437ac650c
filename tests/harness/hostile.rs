//! A registry that misbehaves on purpose: a small HTTP server whose every answer the test
//! chooses, down to how the body is sent.
//!
//! Where [`super::proxy`] bends the answers of a real registry, [`Hostile`] makes answers a
//! real registry never would: manifests nested 3,000 deep, a 500 MB manifest generated as it
//! is sent (never held by the test), a body dribbled a byte at a time or never sent at all,
//! rate-limit headers and digests chosen to break a client, a token realm that reads the form
//! a client posts. [`Content`] serves images the harness built ([`super::image`]) the way a
//! registry would, for the test to override one path at a time. Requests are logged with their
//! headers. Runs its own tokio runtime; its API is synchronous.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::image::{sha256_digest, Image};
use super::proxy::RequestInfo;
use super::server::Server;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most of a request body the server reads (token forms are tiny).
const MAX_REQUEST_BODY: usize = 1 << 20;
/// Chunk size of generated bodies.
const CHUNK: usize = 64 * 1024;

/// How a reply's body is sent.
#[derive(Debug, Clone)]
pub enum Body {
    /// All at once, with its length.
    Bytes(Vec<u8>),
    /// `len` copies of `byte`, generated as they are sent; `declared` sends `Content-Length`,
    /// otherwise the body is chunked and its size unknown until it ends.
    Repeat { byte: u8, len: u64, declared: bool },
    /// `bytes`, one byte every `every`, with their length declared.
    Dribble { bytes: Vec<u8>, every: Duration },
    /// Headers (with a declared length of `len`), then nothing, ever.
    Stall { len: u64 },
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::status(status)
            .header("content-type", "application/json")
            .body(Body::Bytes(value.to_string().into_bytes()))
    }

    /// A manifest as a registry serves it: its media type and its sha256 digest in headers.
    pub fn manifest(bytes: &[u8], media_type: &str) -> Reply {
        Reply::status(200)
            .header("content-type", media_type)
            .header("docker-content-digest", &sha256_digest(bytes))
            .body(Body::Bytes(bytes.to_vec()))
    }

    /// Adds a header (a second one of the same name is added, not replaced).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Replaces a header.
    pub fn set_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.header(name, value)
    }

    pub fn body(mut self, body: Body) -> Reply {
        self.body = body;
        self
    }
}

/// What the handler decides from: the request and its body (read up to 1 MiB).
pub type Handler = dyn Fn(&RequestInfo, &[u8]) -> Reply + Send + Sync;

struct Shared {
    host: String,
    log: Mutex<Vec<RequestInfo>>,
    handler: Box<Handler>,
}

/// A running hostile registry on a random loopback port (plain HTTP); stopped when dropped.
pub struct Hostile {
    shared: Arc<Shared>,
    _server: Server,
}

impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hostile")
            .field("host", &self.shared.host)
            .finish()
    }
}

impl Hostile {
    /// Starts a server answering every request with `handler`.
    pub fn start(
        handler: impl Fn(&RequestInfo, &[u8]) -> Reply + Send + Sync + 'static,
    ) -> Hostile {
        let bound = Server::bind("test-hostile");
        let shared = Arc::new(Shared {
            host: bound.host.clone(),
            log: Mutex::new(Vec::new()),
            handler: Box::new(handler),
        });
        let serving = Arc::clone(&shared);
        let server = bound.serve(|| {}, move |request| handle(Arc::clone(&serving), request));
        Hostile {
            shared,
            _server: server,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.shared.host
    }

    /// Every request so far, in arrival order, with its headers.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.log.lock().unwrap().clone()
    }

    /// How many requests `predicate` picks.
    pub fn count(&self, predicate: impl Fn(&RequestInfo) -> bool) -> usize {
        self.requests().iter().filter(|r| predicate(r)).count()
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, BoxError>>, Infallible> {
    let (parts, body) = request.into_parts();
    let info = RequestInfo {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
    };
    let body = Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    shared.log.lock().unwrap().push(info.clone());
    let reply = (shared.handler)(&info, &body);
    Ok(respond(reply))
}

fn respond(reply: Reply) -> Response<BoxBody<Bytes, BoxError>> {
    let frames = |stream: futures_util::stream::BoxStream<'static, Bytes>| {
        let stream = sync_wrapper(stream);
        BodyExt::boxed(StreamBody::new(
            stream.map(|chunk| Ok::<_, BoxError>(Frame::data(chunk))),
        ))
    };
    let (body, length) = match reply.body {
        Body::Bytes(bytes) => (
            Full::new(Bytes::from(bytes))
                .map_err(|never: Infallible| match never {})
                .boxed(),
            None,
        ),
        Body::Repeat {
            byte,
            len,
            declared,
        } => {
            let chunk = Bytes::from(vec![byte; CHUNK]);
            let chunks = futures_util::stream::unfold(len, move |left| {
                let chunk = chunk.clone();
                async move {
                    (left > 0).then(|| {
                        let n = left.min(CHUNK as u64);
                        (chunk.slice(..n as usize), left - n)
                    })
                }
            });
            (frames(chunks.boxed()), declared.then_some(len))
        }
        Body::Dribble { bytes, every } => {
            let len = bytes.len() as u64;
            let chunks = futures_util::stream::iter(bytes).then(move |byte| async move {
                tokio::time::sleep(every).await;
                Bytes::from(vec![byte])
            });
            (frames(chunks.boxed()), Some(len))
        }
        Body::Stall { len } => (frames(futures_util::stream::pending().boxed()), Some(len)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("a valid status");
    let headers = response.headers_mut();
    if let Some(len) = length {
        headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    for (name, value) in reply.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_str(&value).expect("a valid header value");
        headers.append(name, value);
    }
    response
}

/// `BoxBody` wants a `Sync` body; a boxed stream is only `Send`. Polling needs `&mut`, so a
/// mutex that is never contended makes it `Sync`.
fn sync_wrapper(
    stream: futures_util::stream::BoxStream<'static, Bytes>,
) -> impl futures_util::Stream<Item = Bytes> + Send + Sync + 'static {
    let stream = Arc::new(Mutex::new(stream));
    futures_util::stream::poll_fn(move |cx| stream.lock().unwrap().poll_next_unpin(cx))
}

/// Images as a registry serves them: `/v2/`, manifests by tag and by digest, blobs. A test
/// answers the paths it cares about itself and hands the rest to [`Content::reply`].
#[derive(Debug, Clone, Default)]
pub struct Content {
    /// `repo/reference` → (bytes, media type).
    manifests: HashMap<String, (Vec<u8>, String)>,
    /// digest → bytes.
    blobs: HashMap<String, Vec<u8>>,
}

impl Content {
    /// Adds `image` under `repo:tag`: its manifests by tag and digest, and its blobs.
    pub fn image(mut self, repo: &str, tag: &str, image: &Image) -> Content {
        let top = image.top();
        self = self.manifest(repo, tag, &top.bytes, &top.media_type);
        self = self.manifest(repo, &top.digest, &top.bytes, &top.media_type);
        for child in image.children() {
            self = self.manifest(repo, &child.digest, &child.bytes, &child.media_type);
        }
        for (digest, data) in image.blob_data() {
            self.blobs.insert(digest, data.to_vec());
        }
        self
    }

    /// Adds one manifest under `repo:reference` (a tag or a digest).
    pub fn manifest(
        mut self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Content {
        self.manifests.insert(
            format!("{repo}/{reference}"),
            (bytes.to_vec(), media_type.to_owned()),
        );
        self
    }

    /// The answer a registry holding this content gives to `request`.
    pub fn reply(&self, request: &RequestInfo) -> Reply {
        use super::proxy::Endpoint;
        match request.endpoint() {
            Endpoint::Base => Reply::json(200, &serde_json::json!({})),
            Endpoint::Manifest => {
                let key = format!("{}/{}", request.repo(), request.reference());
                match self.manifests.get(&key) {
                    Some((bytes, media_type)) => Reply::manifest(bytes, media_type),
                    None => not_found("MANIFEST_UNKNOWN"),
                }
            }
            Endpoint::Blob => match self.blobs.get(request.reference()) {
                Some(data) => Reply::status(200)
                    .header("content-type", "application/octet-stream")
                    .header("docker-content-digest", request.reference())
                    .body(Body::Bytes(data.clone())),
                None => not_found("BLOB_UNKNOWN"),
            },
            _ => not_found("NAME_UNKNOWN"),
        }
    }
}

fn not_found(code: &str) -> Reply {
    Reply::json(
        404,
        &serde_json::json!({ "errors": [{ "code": code, "message": "unknown" }] }),
    )
}
