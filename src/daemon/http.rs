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
//! - at most [`MAX_CONNECTIONS`] are served at once. One more takes the place of the
//!   connection that has gone longest without a request under way (one still sending its
//!   first headers, or idle between requests), which is closed; only when every connection
//!   has a request under way is the new one closed at once. A client that opens connections
//!   and sends nothing cannot keep a liveness probe out: the probe, the newest, sends its
//!   request at once and is answered (before, 64 connections that never finished their
//!   headers, reopened as each was cut off, failed 19 of 20 probes, and Kubernetes restarted
//!   the pod in a loop);
//! - on shutdown no connection is accepted, idle ones close at once, and the rest get
//!   [`SHUTDOWN_WAIT`] before they are dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
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
    let open = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    let closing = CancellationToken::new();
    let (mut refused, mut evicted) = (0u64, 0u64);
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
        let seat = match open.admit() {
            Admitted::Free(seat) => seat,
            Admitted::InPlaceOfIdle(seat) => {
                evicted += 1;
                if evicted.is_power_of_two() {
                    warn!(
                        evicted,
                        max = MAX_CONNECTIONS,
                        "the HTTP endpoint is serving as many connections as it takes: closing the one longest without a request for each new one"
                    );
                }
                seat
            }
            Admitted::Full => {
                refused += 1;
                if refused.is_power_of_two() {
                    warn!(
                        refused,
                        max = MAX_CONNECTIONS,
                        "the HTTP endpoint is answering as many requests as it takes: closing new connections"
                    );
                }
                continue; // dropped: closed at once
            }
        };
        let (app, closing) = (app.clone(), closing.clone());
        tasks.spawn(async move {
            let router = TowerToHyperService::new(app);
            let standing = seat.connection.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = router.call(request);
                let busy = Busy::mark(standing.clone());
                async move {
                    let _busy = busy;
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
                // Dropped, which closes it, to make room for a newer one.
                _ = seat.connection.evicted.cancelled() => return,
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
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_WAIT, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            connections = tasks.len(),
            "HTTP connections still open at shutdown were dropped"
        );
    }
}

/// The connections served, oldest first, to make room for a new one at the cap.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    /// By the order they were accepted in.
    by_id: BTreeMap<u64, Arc<Connection>>,
}

/// One connection's standing, shared by its task and the accept loop.
#[derive(Debug, Default)]
struct Connection {
    /// Whether a request is under way: one without may be evicted.
    busy: AtomicBool,
    /// Cancelled when it is evicted: its task drops it, which closes it.
    evicted: CancellationToken,
}

/// What a newly accepted connection finds.
#[derive(Debug)]
enum Admitted {
    /// A free place.
    Free(Seat),
    /// The place of the connection longest without a request under way, now evicted.
    InPlaceOfIdle(Seat),
    /// No place: every connection has a request under way.
    Full,
}

impl Connections {
    fn admit(self: &Arc<Self>) -> Admitted {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if open.by_id.len() >= MAX_CONNECTIONS {
            let idle = open
                .by_id
                .iter()
                .find(|(_, connection)| !connection.busy.load(Ordering::Acquire))
                .map(|(id, _)| *id);
            let Some(victim) = idle.and_then(|id| open.by_id.remove(&id)) else {
                return Admitted::Full;
            };
            victim.evicted.cancel();
            evicted = true;
        }
        let id = open.next_id;
        open.next_id += 1;
        let connection = Arc::new(Connection::default());
        open.by_id.insert(id, connection.clone());
        let seat = Seat {
            connections: self.clone(),
            id,
            connection,
        };
        if evicted {
            Admitted::InPlaceOfIdle(seat)
        } else {
            Admitted::Free(seat)
        }
    }
}

/// A connection's place among those served, given up when its task ends.
#[derive(Debug)]
struct Seat {
    connections: Arc<Connections>,
    id: u64,
    connection: Arc<Connection>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.by_id.remove(&self.id);
    }
}

/// A request under way on a connection, from its complete headers to its answer.
struct Busy(Arc<Connection>);

impl Busy {
    fn mark(connection: Arc<Connection>) -> Busy {
        connection.busy.store(true, Ordering::Release);
        Busy(connection)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

fn too_slow() -> Response<Body> {
    let mut response = Response::new(Body::from("{\"error\":\"the request took too long\"}"));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    response
}
