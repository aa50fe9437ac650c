//! Noticing edits to mirrors.toml, however they are made.
//!
//! The file's directory is watched rather than the file: editors that save by writing a new
//! file and renaming it over the old one (vim, sed -i, Ansible, Kubernetes ConfigMap volumes)
//! replace the inode a file watch would follow. Any change in the directory, after a short
//! quiet period, is reported once; the daemon then compares the file's bytes with what it
//! last loaded, so unrelated files in the directory cost one read and nothing else.

use std::path::Path;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long the directory must be quiet before a change is reported: an editor's save is
/// several events.
const SETTLE: Duration = Duration::from_millis(250);

/// A message after each burst of changes in the directory of `path`.
pub fn changes(path: &Path) -> notify::Result<mpsc::Receiver<()>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file (the daemon's own reloads included) is not a change.
        let is_read = matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write));
        if !is_read {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _watcher = watcher; // watching lasts as long as this task
        while raw_rx.recv().await.is_some() {
            // Wait for the burst to end.
            while let Ok(Some(())) = tokio::time::timeout(SETTLE, raw_rx.recv()).await {}
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
