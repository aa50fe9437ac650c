//! The daemon's HTTP endpoint, off unless `[server] listen` is set.
//!
//! - `GET /` (or `/index.html`): the same as a page for people ([`crate::daemon::page`]),
//!   under a `Content-Security-Policy` that lets it load nothing from anywhere.
//! - `GET /healthz`: 200 with every mirror's last result as JSON while the daemon runs, 503
//!   once it is stopping.
//! - `GET /metrics`: Prometheus metrics ([`crate::daemon::metrics`]).
//! - `POST /sync[?mirror=NAME]`: run every mirror (or one) now. Allowed with
//!   `Authorization: Bearer <server.sync_token>`, or a body signed like a GitHub webhook,
//!   `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with server.webhook_secret>`,
//!   so a registry's package webhook can start a sync the moment an image is pushed. Both
//!   are compared in constant time, before anything of the body is read, and a body is read
//!   bounded ([`crate::daemon::admission`]); a signed delivery seen lately is answered as
//!   already handled. With neither configured the route answers 403. Without `?mirror=`, a
//!   GitHub `package` or `registry_package` event ([`crate::daemon::webhook`]) runs the
//!   mirrors whose source is that package, and 404s with the reason when none is.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::daemon::admission::{Admission, Admitted, Refusal, BODY_QUEUE};
use crate::daemon::page;
use crate::daemon::webhook::{self, Verdict};
use crate::daemon::{Daemon, Started};

/// What the routes share.
#[derive(Debug, Clone)]
struct Endpoint {
    daemon: Arc<Daemon>,
    /// `POST /sync`'s turns to read a body and the deliveries it acted on.
    admission: Arc<Admission>,
}

impl FromRef<Endpoint> for Arc<Daemon> {
    fn from_ref(endpoint: &Endpoint) -> Self {
        endpoint.daemon.clone()
    }
}

impl FromRef<Endpoint> for Arc<Admission> {
    fn from_ref(endpoint: &Endpoint) -> Self {
        endpoint.admission.clone()
    }
}

/// Binds `listen` and serves until `stop` is cancelled. Binding errors are returned, so a
/// port already in use stops the daemon at start with a clear message.
pub async fn start(
    listen: SocketAddr,
    daemon: Arc<Daemon>,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/sync", post(sync))
        .with_state(Endpoint {
            daemon,
            admission: Arc::default(),
        });
    info!(%address, "serving /healthz, /metrics, POST /sync and the status page at /");
    // Each connection bounded in time and number (see daemon::http).
    Ok(tokio::spawn(crate::daemon::http::serve(
        listener, app, stop,
    )))
}

async fn healthz(State(daemon): State<Arc<Daemon>>) -> Response {
    (liveness(&daemon), Json(daemon.snapshot())).into_response()
}

/// 200 while the daemon runs, 503 once it is stopping: for `/healthz` and the page alike.
fn liveness(daemon: &Daemon) -> StatusCode {
    if daemon.is_stopping() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn page(State(daemon): State<Arc<Daemon>>) -> Response {
    let body = page::render(&daemon.snapshot());
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, page::CSP.as_str()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (liveness(&daemon), headers, body).into_response()
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    let body = daemon.metrics.render(&daemon.usage());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SyncQuery {
    mirror: Option<String>,
}

async fn sync(
    State(daemon): State<Arc<Daemon>>,
    State(admission): State<Arc<Admission>>,
    Query(query): Query<SyncQuery>,
    request: Request,
) -> Response {
    let Some(settings) = daemon.server_settings() else {
        return error(
            StatusCode::FORBIDDEN,
            "POST /sync is off: [server] is not configured",
        );
    };
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let (body, delivery) = match admission.admit(&settings, &headers, body).await {
        Ok(Admitted::Token) => (Bytes::new(), None),
        Ok(Admitted::Signed { body, delivery }) => (body, Some(delivery)),
        Ok(Admitted::Repeat) => {
            info!("POST /sync: a signed delivery seen before, not acted on again");
            let why = "already handled: this delivery (its X-GitHub-Delivery id or its signed body) was acted on before";
            return (StatusCode::OK, Json(json!({"started": [], "ignored": why}))).into_response();
        }
        Err(refusal) => return refused(refusal),
    };
    let answer = dispatch(&daemon, query, &headers, body).await;
    if let Some(delivery) = delivery.filter(|_| !answer.status().is_success()) {
        admission.forget(&delivery);
    }
    answer
}

fn refused(refusal: Refusal) -> Response {
    let status = refusal.status();
    warn!(status = status.as_u16(), "POST /sync refused: {refusal}");
    let mut response = error(status, &refusal.to_string());
    let extra = match status {
        StatusCode::UNAUTHORIZED => Some((header::WWW_AUTHENTICATE, "Bearer".to_string())),
        StatusCode::SERVICE_UNAVAILABLE => {
            Some((header::RETRY_AFTER, BODY_QUEUE.as_secs().to_string()))
        }
        _ => None,
    };
    if let Some((name, value)) = extra {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a valid header"));
    }
    response
}

/// What an admitted `POST /sync` asks for, run. A request let in by the token comes with an
/// empty `body`.
async fn dispatch(daemon: &Daemon, query: SyncQuery, headers: &HeaderMap, body: Bytes) -> Response {
    let config = daemon.config();
    let github_event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let names: Vec<String> = match (&query.mirror, github_event.as_deref()) {
        (None, Some("ping")) => {
            return (
                StatusCode::OK,
                Json(json!({"pong": "regmirror is listening; send package events"})),
            )
                .into_response()
        }
        (None, Some(event)) if webhook::PACKAGE_EVENTS.contains(&event) => {
            match webhook::package_event(&config, event, &body) {
                Verdict::Run(names) => {
                    info!(mirrors = ?names, "package webhook");
                    names
                }
                Verdict::Ignore(why) => {
                    return (StatusCode::OK, Json(json!({"started": [], "ignored": why})))
                        .into_response()
                }
                Verdict::NoMatch(why) => return error(StatusCode::NOT_FOUND, &why),
                Verdict::Malformed(why) => return error(StatusCode::BAD_REQUEST, &why),
            }
        }
        (None, Some(other)) => {
            let why = format!(
                "GitHub event {other:?} is not acted on: regmirror runs mirrors on package and registry_package events"
            );
            return (StatusCode::OK, Json(json!({"started": [], "ignored": why}))).into_response();
        }
        (mirror, _) => {
            match mirror {
                Some(name) if config.mirrors.iter().any(|m| &m.name == name) => vec![name.clone()],
                Some(name) => {
                    let known: Vec<_> = config.mirrors.iter().map(|m| m.name.as_str()).collect();
                    return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("no mirror is named {name:?}"), "mirrors": known})),
            )
                .into_response();
                }
                None => config.mirrors.iter().map(|m| m.name.clone()).collect(),
            }
        }
    };
    let (mut started, mut running) = (Vec::new(), Vec::new());
    for name in names {
        match daemon.start(&name, "POST /sync") {
            Some(Started::Now) => started.push(name),
            Some(Started::AlreadyRunning) => running.push(name),
            Some(Started::ShuttingDown) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            }
            None => {} // removed by a reload meanwhile
        }
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"started": started, "already_running": running})),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
