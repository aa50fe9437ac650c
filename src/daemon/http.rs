//! The endpoint's connections, each bounded, so no client can hold the daemon.
//!
//! `axum::serve` waits for headers forever, takes every connection offered and, on shutdown,
//! waits for every connection to end: one client that never finished its headers kept the
//! daemon alive past systemd's stop timeout, and a few hundred idle ones used up the file
//! descriptors until `/healthz` stopped answering. Here:
//!
//! - a request's headers must arrive within [`HEADER_TIMEOUT`] (an idle keep-alive
//!   connection waiting for its next request too);
//! - one request, body and answer included, gets [`REQUEST_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] are served at once; one more is closed as soon as it is
//!   accepted;
//! - on shutdown no connection is accepted, idle ones close at once, and the rest get
//!   [`SHUTDOWN_WAIT`] before they are dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, its body and the answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once: far more than a scraper, a probe and a webhook need.
pub const MAX_CONNECTIONS: usize = 64;
/// How long connections still busy at shutdown may finish.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` is cancelled, then within [`SHUTDOWN_WAIT`].
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut refused = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: let connections close before trying again.
                warn!(error = %e, "the HTTP endpoint cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(
                    refused,
                    max = MAX_CONNECTIONS,
                    "the HTTP endpoint is serving as many connections as it takes: closing new ones"
                );
            }
            continue; // dropped: closed at once
        };
        let (app, closing) = (app.clone(), closing.clone());
        connections.spawn(async move {
            let _slot = slot;
            let router = TowerToHyperService::new(app);
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = router.call(request);
                async move {
                    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                        Ok(answered) => answered,
                        Err(_) => Ok(too_slow()),
                    }
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                debug!(error = %e, "an HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    if tokio::time::timeout(SHUTDOWN_WAIT, connections.wait())
        .await
        .is_err()
    {
        warn!(
            connections = connections.len(),
            "HTTP connections still open at shutdown were dropped"
        );
    }
}

fn too_slow() -> Response<Body> {
    let mut response = Response::new(Body::from("{\"error\":\"the request took too long\"}"));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    response
}
