//! Telling systemd how the service is doing (`Type=notify`), through `$NOTIFY_SOCKET`.
//!
//! READY=1 once the config is loaded and the scheduler runs; RELOADING=1 (with the monotonic
//! time systemd wants) and READY=1 around a reload; STOPPING=1 on shutdown; WATCHDOG=1 from the
//! main loop at half of `WatchdogSec`, so a wedged loop gets the service restarted. Outside
//! systemd (no `$NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        // Not fatal: the service still works, systemd just hears less about it.
        debug!(error = %e, "cannot notify systemd");
    }
}

/// The config is loaded and the scheduler runs; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts; [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to send [`watchdog`], if systemd asks for keep-alives.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
