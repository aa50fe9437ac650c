//! The loopback HTTP/1.1 server under the harness's fakes ([`super::proxy::Proxy`] and
//! [`super::hostile::Hostile`]): a random port, its own tokio runtime on background threads,
//! every request of every connection handed to one function. Stopped when dropped.

use std::error::Error;
use std::future::Future;
use std::net::TcpListener as StdTcpListener;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn Error + Send + Sync>;

/// A running server; its runtime (and every connection) ends when it is dropped.
#[derive(Debug)]
pub struct Server {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// `None` only during drop.
    runtime: Option<tokio::runtime::Runtime>,
}

/// A bound port, not yet serving: its address is known before the handler is made.
#[derive(Debug)]
pub struct Bound {
    /// `127.0.0.1:PORT`.
    pub host: String,
    listener: tokio::net::TcpListener,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Binds a random loopback port, with a runtime whose threads are called `name`.
    pub fn bind(name: &str) -> Bound {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let host = listener.local_addr().expect("local address").to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("build a server runtime");
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("register listener")
        };
        Bound {
            host,
            listener,
            runtime,
        }
    }
}

impl Bound {
    /// Serves `handle`; `connected` is called for each connection accepted.
    pub fn serve<H, Fut, B, E>(
        self,
        connected: impl Fn() + Send + Sync + 'static,
        handle: H,
    ) -> Server
    where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        let Bound {
            host,
            listener,
            runtime,
        } = self;
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connected();
                let handle = handle.clone();
                tokio::spawn(async move {
                    // Errors here are clients going away or deliberate disconnects.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .await;
                });
            }
        });
        Server {
            host,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
