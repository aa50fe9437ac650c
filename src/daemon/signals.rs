//! Unix signals, turned into what the rest of the program understands.
//!
//! SIGTERM (systemd, ECS, Kubernetes) and SIGINT (Ctrl-C) cancel the shutdown token; SIGHUP
//! asks the daemon to re-read its config. Everything long-running watches the token, so a
//! test that cancels it exercises the same path as a signal.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `stop` on the first SIGTERM or SIGINT. A second one is left to its default action,
/// so an impatient Ctrl-C still ends the process at once.
pub fn stop_on_terminate(stop: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down: no new copies start");
        stop.cancel();
        // Keep the handlers installed during the grace period (a second signal is ignored
        // rather than killing copies that are finishing), unless it is a second Ctrl-C.
        int.recv().await;
        info!("second SIGINT: exiting now");
        std::process::exit(130);
    });
    Ok(())
}

/// A message for every SIGHUP.
pub fn hangups() -> std::io::Result<mpsc::Receiver<()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // A full channel already holds a reload request: one is enough.
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}
