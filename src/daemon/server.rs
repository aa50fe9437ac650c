//! The daemon's HTTP endpoint, off unless `[server] listen` is set.
//!
//! - `GET /healthz`: 200 with every mirror's last result as JSON while the daemon runs, 503
//!   once it is stopping.
//! - `GET /metrics`: Prometheus metrics ([`crate::daemon::metrics`]).
//! - `POST /sync[?mirror=NAME]`: run every mirror (or one) now. Allowed with
//!   `Authorization: Bearer <server.sync_token>`, or a body signed like a GitHub webhook,
//!   `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with server.webhook_secret>`,
//!   so a registry's package webhook can start a sync the moment an image is pushed. Both
//!   are compared in constant time. With neither configured the route answers 403. Without
//!   `?mirror=`, a GitHub `package` or `registry_package` event ([`crate::daemon::webhook`])
//!   runs the mirrors whose source is that package, and 404s with the reason when none is.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ServerSettings;
use crate::daemon::webhook::{self, Verdict};
use crate::daemon::{Daemon, Started};

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
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/sync", post(sync))
        .with_state(daemon);
    info!(%address, "serving /healthz, /metrics and POST /sync");
    // Each connection bounded in time and number (see daemon::http).
    Ok(tokio::spawn(crate::daemon::http::serve(
        listener, app, stop,
    )))
}

async fn healthz(State(daemon): State<Arc<Daemon>>) -> Response {
    let status = if daemon.is_stopping() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(daemon.health())).into_response()
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
    Query(query): Query<SyncQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(settings) = daemon.server_settings() else {
        return error(
            StatusCode::FORBIDDEN,
            "POST /sync is off: [server] is not configured",
        );
    };
    if let Err((status, message)) = authorize(&settings, &headers, &body) {
        warn!(status = status.as_u16(), "POST /sync refused: {message}");
        let mut response = error(status, message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("a valid header"),
            );
        }
        return response;
    }
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

/// Whether the request carries the bearer token or a valid webhook signature.
fn authorize(
    settings: &ServerSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (StatusCode, &'static str)> {
    if settings.sync_token.is_none() && settings.webhook_secret.is_none() {
        return Err((
            StatusCode::FORBIDDEN,
            "POST /sync is off: set server.sync_token or server.webhook_secret",
        ));
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let mut refusal = None;
    if let (Some(token), Some(given)) = (&settings.sync_token, text("authorization")) {
        let given = bearer(given).unwrap_or_default();
        if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return Ok(());
        }
        refusal = Some("wrong bearer token");
    }
    if let (Some(secret), Some(signature)) = (&settings.webhook_secret, text("x-hub-signature-256"))
    {
        let valid = signature
            .strip_prefix("sha256=")
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .is_some_and(|expected| {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                    .expect("HMAC takes a key of any length");
                mac.update(body);
                mac.verify_slice(&expected).is_ok()
            });
        if valid {
            return Ok(());
        }
        refusal = Some("X-Hub-Signature-256 does not match the body");
    }
    if let Some(refusal) = refusal {
        return Err((StatusCode::UNAUTHORIZED, refusal));
    }
    Err((
        StatusCode::UNAUTHORIZED,
        "no credentials: send Authorization: Bearer <token> or X-Hub-Signature-256",
    ))
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive
/// (RFC 7235), so `bearer` and `BEARER` are the same.
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Secret;

    fn settings(token: Option<&str>, secret: Option<&str>) -> ServerSettings {
        ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            sync_token: token.map(|t| Secret::new(t.to_string())),
            webhook_secret: secret.map(|s| Secret::new(s.to_string())),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn github_signature_example_is_accepted() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload
        // "Hello, World!".
        let s = settings(None, Some("It's a Secret to Everybody"));
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(authorize(
            &s,
            &headers(&[("x-hub-signature-256", good)]),
            b"Hello, World!"
        )
        .is_ok());
        let refused = authorize(
            &s,
            &headers(&[("x-hub-signature-256", good)]),
            b"Hello, World?",
        );
        assert_eq!(refused.unwrap_err().0, StatusCode::UNAUTHORIZED);
        for bad in [
            "sha256=00",
            "sha1=757107ea",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=zz",
        ] {
            let refused = authorize(
                &s,
                &headers(&[("x-hub-signature-256", bad)]),
                b"Hello, World!",
            );
            assert_eq!(refused.unwrap_err().0, StatusCode::UNAUTHORIZED, "{bad}");
        }
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let s = settings(Some("t0ken"), None);
        for good in ["Bearer t0ken", "bearer t0ken", "BEARER  t0ken "] {
            let given = headers(&[("authorization", good)]);
            assert!(authorize(&s, &given, b"").is_ok(), "{good}");
        }
        for bad in [
            "Bearer t0ke",
            "Bearer t0ken2",
            "Basic t0ken",
            "t0ken",
            "Bearer ",
        ] {
            let refused = authorize(&s, &headers(&[("authorization", bad)]), b"");
            assert_eq!(refused.unwrap_err().0, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert_eq!(
            authorize(&s, &HeaderMap::new(), b"").unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn without_a_token_or_secret_sync_is_off() {
        let refused = authorize(
            &settings(None, None),
            &headers(&[("authorization", "Bearer x")]),
            b"",
        );
        assert_eq!(refused.unwrap_err().0, StatusCode::FORBIDDEN);
    }
}
