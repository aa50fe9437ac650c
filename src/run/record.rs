//! The report file (`--report FILE`): what a pass did, as one JSON document for machines (a
//! CI pipeline that wants the digests it wrote, image automation, an audit trail).
//!
//! It is written at the end of each pass to a temporary file beside the target, flushed to
//! disk, and renamed over it, so a reader sees the previous pass's document or this one,
//! never half of one. Its shape is versioned (`version`); fields are only ever added.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::report::{ImageResult, Report};
use crate::copy::Outcome;

/// The document's shape; a change that removes or renames a field would raise it.
const VERSION: u32 = 1;

/// `report` as the report file's document; the pass ended at `finished`.
pub fn document(report: &Report, finished: DateTime<Utc>) -> Value {
    let elapsed = chrono::TimeDelta::from_std(report.elapsed).unwrap_or_default();
    let started = finished - elapsed;
    let images: Vec<Value> = report.results.iter().map(image).collect();
    let (changed, unchanged) = report.counts();
    let stats = report.results.iter().filter_map(|r| match &r.outcome {
        Ok(Outcome::Mirrored { stats, .. }) => Some(stats),
        _ => None,
    });
    let (pulls, bytes) = stats.fold((0, 0), |(p, b), s| (p + s.pulls, b + s.bytes_copied));
    json!({
        "version": VERSION,
        "started": stamp(started),
        "finished": stamp(finished),
        "dry_run": report.dry_run,
        "totals": {
            "images": report.results.len(),
            (if report.dry_run { "would_copy" } else { "mirrored" }): changed,
            "unchanged": unchanged,
            "immutable": report.immutable(),
            "failed": report.failed(),
            "pruned": report.pruned.iter().filter(|p| p.deleted).count(),
            "pulls": pulls,
            "bytes_copied": bytes,
        },
        "compared": {
            "by_api": report.compared.by_api,
            "by_head": report.compared.by_head,
            "api_fallbacks": report.compared.api_fallbacks,
        },
        "images": images,
        "problems": report.problems.iter().map(|p| json!({
            "reason": p.reason.as_str(),
            "message": p.message,
        })).collect::<Vec<_>>(),
        "pruned": report.pruned.iter().map(|p| json!({
            "mirror": p.mirror,
            "tag": p.image.named().to_string(),
            "digest": p.image.digest,
            "why": p.why.as_str(),
            "deleted": p.deleted,
        })).collect::<Vec<_>>(),
        "price": report.prices.iter().map(|p| json!({
            "registry": p.registry,
            "pulls": p.pulls,
            "pulls_estimate": p.estimate.kind(),
            "remaining": p.remaining,
            "limit": p.limit,
            "window_seconds": p.window.map(|w| w.as_secs()),
            "takes_seconds": p.takes().map(|t| t.as_secs()),
        })).collect::<Vec<_>>(),
        "registries": report.usage.iter().map(|u| json!({
            "registry": u.registry,
            "pulls": u.pulls,
            "refused": u.refused,
            "paused_seconds": u.paused.as_secs_f64(),
            "remaining": u.remaining,
            "limit": u.limit,
            "tag_list_requests": u.tag_lists,
            "requests": u.requests.by_kind().into_iter()
                .map(|(kind, n)| (kind.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

/// One image's entry: where from and to, what happened, the digest written or found.
fn image(r: &ImageResult) -> Value {
    let mut entry = json!({
        "source": r.job.source.to_string(),
        "target": r.job.target.to_string(),
        "origin": r.job.origin(),
    });
    let fields = match &r.outcome {
        Ok(Outcome::Mirrored { digest, stats }) => json!({
            "outcome": "mirrored",
            "digest": digest,
            "pulls": stats.pulls,
            "bytes_copied": stats.bytes_copied,
            "blobs_copied": stats.blobs_copied,
            "blobs_mounted": stats.blobs_mounted,
            "referrers": stats.referrers,
        }),
        Ok(Outcome::Unchanged { digest }) => json!({"outcome": "unchanged", "digest": digest}),
        Ok(Outcome::WouldCopy {
            digest,
            target,
            price,
        }) => json!({
            "outcome": "would_copy",
            "digest": digest,
            "target_digest": target,
            "pulls": price.pulls(),
            "pulls_estimate": price.kind(),
        }),
        Ok(Outcome::Skipped { reason }) => json!({"outcome": "skipped", "why": reason}),
        Ok(Outcome::Immutable { was, upstream }) => json!({
            "outcome": "immutable",
            "reason": "immutable",
            "digest": was,
            "upstream_digest": upstream,
        }),
        Err(failed) => json!({
            "outcome": "failed",
            "reason": failed.reason().as_str(),
            "error": failed.to_string(),
        }),
    };
    if let (Some(entry), Value::Object(fields)) = (entry.as_object_mut(), fields) {
        entry.extend(fields);
    }
    entry
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Writes `document` to `path` atomically: a temporary file of its own in the same directory,
/// synced, then renamed over `path`.
pub fn write(path: &Path, document: &Value) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".to_string());
    // Its own temporary file per write: the daemon's mirrors may finish at the same time.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        serde_json::to_writer_pretty(&mut file, document)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write(&path, &json!({"a": 1})).unwrap();
        write(&path, &json!({"b": 2})).unwrap();
        let read: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, json!({"b": 2}));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        let nowhere = dir.path().join("missing/report.json");
        assert!(write(&nowhere, &json!({})).is_err());
    }
}
