//! How much regmirror reads from a registry, and for how long.
//!
//! Every answer comes from a registry that may be broken or hostile, so every read is bounded
//! in size and in time. A registry past a bound costs the image it was asked for, with a
//! message that says which bound; never the process's memory, and never a run's deadline.
//!
//! - Manifests: at most [`MAX_MANIFEST_BYTES`] (4 MiB, distribution's own limit). A declared
//!   `Content-Length` over it is refused unread, and reading stops past it whatever was
//!   declared.
//! - Error bodies at most [`MAX_ERROR_BYTES`] (only their first line is shown anyway); token
//!   answers and `/v2/` at most [`MAX_TOKEN_BYTES`].
//! - Every request but a blob transfer has one total deadline, from sending it to its last
//!   byte: [`REQUEST_DEADLINE`], or `max_wait` if that is shorter. A body sent a byte at a
//!   time cannot keep a request alive past it.
//! - A blob transfer may take as long as it needs while it moves: at least
//!   [`MIN_TRANSFER_RATE`] on average over every [`TRANSFER_WINDOW`] (or `max_wait`, if
//!   shorter), counted as the bytes pass from source to target, so a stall at either end is
//!   seen. Once every byte is sent, the target's answer gets [`REQUEST_DEADLINE`].
//!
//! - A listing, and an image (all of it: compared, its children, blobs, referrers and tags),
//!   has one overall deadline: [`WHOLE_PER_MAX_WAIT`] times `max_wait`, at least
//!   [`MIN_WHOLE`]. Every request keeping inside its own deadline, page after page or child
//!   after child, cannot hold a copy slot for hours. Time an image spends queued for a copy
//!   slot is not counted: that is other images' work. See [`super::waiting::Overdue`].
//!
//! A request cut short for time fails with [`Failure::Stalled`]: retried like a dropped
//! connection, and the time it took counts against the image's `max_wait`, so a registry that
//! stalls every answer fails the image within `max_wait`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{Failure, RegistryError};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The largest manifest regmirror reads: distribution refuses to store a larger one.
pub const MAX_MANIFEST_BYTES: usize = 4 * MIB;
/// The most of an error answer read; its first line is all a message shows.
pub const MAX_ERROR_BYTES: usize = 64 * KIB;
/// The most of a token answer (or of `/v2/`) read: tokens are a few KiB.
pub const MAX_TOKEN_BYTES: usize = 256 * KIB;
/// The longest one request that is not a blob transfer may take, answer included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// The window a blob transfer's rate is judged over.
pub const TRANSFER_WINDOW: Duration = Duration::from_secs(30);
/// The slowest a blob transfer may move, in bytes per second averaged over a window: far
/// below any working link, far above a registry sending a byte now and then.
pub const MIN_TRANSFER_RATE: u64 = 10 * KIB as u64;

/// A listing or an image may take this many times `max_wait` in all: its waits (at most
/// `max_wait`) and the work itself, with room to spare.
pub const WHOLE_PER_MAX_WAIT: u32 = 4;
/// The shortest overall deadline of a listing or an image, whatever `max_wait` is.
pub const MIN_WHOLE: Duration = Duration::from_secs(10);

/// The time bounds of one registry client, from the config's `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Total time of one request that is not a blob transfer.
    pub request: Duration,
    /// The window a transfer's rate is judged over.
    pub window: Duration,
    /// Total time of one listing, or of one image (slot queueing not counted).
    pub whole: Duration,
}

impl Deadlines {
    /// The bounds for images that may wait `max_wait` in all: a stalled request must not
    /// outlast the image's whole allowance.
    pub fn for_max_wait(max_wait: Duration) -> Self {
        let max_wait = max_wait.max(Duration::from_secs(1));
        Deadlines {
            request: REQUEST_DEADLINE.min(max_wait),
            window: TRANSFER_WINDOW.min(max_wait),
            whole: max_wait.saturating_mul(WHOLE_PER_MAX_WAIT).max(MIN_WHOLE),
        }
    }
}

/// Runs one request under a total deadline; past it, the request is dropped and fails as
/// stalled, saying what was being done to what.
pub(super) async fn within<T>(
    deadline: Duration,
    action: &'static str,
    subject: &(dyn std::fmt::Display + Sync),
    request: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    let ends = std::time::Instant::now() + deadline;
    until(ends, deadline, action, subject, request).await
}

/// [`within`], for a deadline already running: `deadline` is when it ends, `length` how long
/// it was (for the message).
pub(super) async fn until<T>(
    deadline: std::time::Instant,
    length: Duration,
    action: &'static str,
    subject: &(dyn std::fmt::Display + Sync),
    request: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match tokio::time::timeout(left, request).await {
        Ok(result) => result,
        Err(_) => Err(RegistryError::with(
            action,
            subject,
            Failure::Stalled {
                waited: length,
                what: "no complete answer in time".to_string(),
            },
        )),
    }
}

/// A response body, read up to `cap` bytes: a declared length over it is refused before
/// anything is read, and reading stops as soon as the body passes it.
pub(super) async fn read_body(
    response: reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<Bytes, Failure> {
    let too_large = |size: String| {
        Failure::TooLarge(format!(
            "{what} of {size}; the limit is {}",
            human_bytes(cap as u64)
        ))
    };
    if let Some(declared) = response.content_length().filter(|&l| l > cap as u64) {
        return Err(too_large(human_bytes(declared)));
    }
    let mut body = BytesMut::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| Failure::Transport(super::error::clip(&e.to_string())))?;
        if body.len() + chunk.len() > cap {
            return Err(too_large(format!("more than {}", human_bytes(cap as u64))));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The first bytes of an error answer, for its message; the rest is not read.
pub(super) async fn error_body(response: reqwest::Response) -> Bytes {
    let mut body = BytesMut::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = MAX_ERROR_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ERROR_BYTES {
            break;
        }
    }
    body.freeze()
}

/// Returns when a transfer of `size` bytes, whose bytes so far `moved` counts, breaks the
/// rate rule (or, once all are sent, waits past [`REQUEST_DEADLINE`] for its answer); never
/// returns while it keeps to it. Raced against the transfer, it ends the transfer.
pub async fn stalled(moved: &AtomicU64, size: u64, deadlines: Deadlines) -> Failure {
    let window = deadlines.window;
    let floor = MIN_TRANSFER_RATE.saturating_mul(window.as_secs().max(1));
    let mut before = 0;
    let mut answer_wait = Duration::ZERO;
    loop {
        tokio::time::sleep(window).await;
        let now = moved.load(Ordering::Relaxed);
        if now >= size {
            answer_wait += window;
            if answer_wait >= deadlines.request {
                return Failure::Stalled {
                    waited: answer_wait,
                    what: "the target did not confirm the upload in time".to_string(),
                };
            }
        } else if now - before < floor {
            return Failure::Stalled {
                waited: window,
                what: format!(
                    "transfer stalled: {} in the last {}, under the minimum of {}/s",
                    human_bytes(now - before),
                    crate::registry::waiting::secs(window),
                    human_bytes(MIN_TRANSFER_RATE)
                ),
            };
        }
        before = now;
    }
}

/// `4 MiB`, `512 KiB`, `17 B`: sizes as people read them in messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            let value = bytes as f64 / unit as f64;
            return if bytes % unit == 0 {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{value:.1} {name}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn deadlines_never_outlast_max_wait() {
        let long = Deadlines::for_max_wait(Duration::from_secs(6 * 3600));
        assert_eq!(long.request, REQUEST_DEADLINE);
        assert_eq!(long.window, TRANSFER_WINDOW);
        let short = Deadlines::for_max_wait(Duration::from_secs(10));
        assert_eq!(short.request, Duration::from_secs(10));
        assert_eq!(short.window, Duration::from_secs(10));
        assert_eq!(long.whole, Duration::from_secs(24 * 3600));
        assert_eq!(short.whole, Duration::from_secs(40));
        assert_eq!(Deadlines::for_max_wait(Duration::ZERO).whole, MIN_WHOLE);
        assert_eq!(
            Deadlines::for_max_wait(Duration::ZERO).request,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_moving_transfer_is_left_alone_and_a_stalled_one_is_stopped() {
        let deadlines = Deadlines::for_max_wait(Duration::from_secs(3600));
        let moved = Arc::new(AtomicU64::new(0));
        let size = 100 * MIB as u64;
        let feeder = tokio::spawn({
            let moved = moved.clone();
            async move {
                // 1 MiB/s for 60 s, then a byte every 10 s.
                for _ in 0..60 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    moved.fetch_add(MIB as u64, Ordering::Relaxed);
                }
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    moved.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let started = tokio::time::Instant::now();
        let failure = stalled(&moved, size, deadlines).await;
        feeder.abort();
        let took = started.elapsed();
        assert!(
            took > Duration::from_secs(60) && took <= Duration::from_secs(120),
            "{took:?}"
        );
        assert!(
            matches!(&failure, Failure::Stalled { waited, .. } if *waited == TRANSFER_WINDOW),
            "{failure}"
        );
        assert!(
            failure.to_string().contains("transfer stalled"),
            "{failure}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_that_never_confirms_is_given_up_on() {
        let deadlines = Deadlines::for_max_wait(Duration::from_secs(3600));
        let moved = AtomicU64::new(10);
        let failure = stalled(&moved, 10, deadlines).await;
        assert!(
            failure.to_string().contains("did not confirm the upload"),
            "{failure}"
        );
    }

    #[test]
    fn sizes_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(4 * MIB as u64), "4 MiB");
        assert_eq!(human_bytes(10 * KIB as u64), "10 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(500_000_000), "476.8 MiB");
    }
}
