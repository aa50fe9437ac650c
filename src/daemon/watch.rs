//! Noticing edits to mirrors.toml, however they are made.
//!
//! The file's directory is watched rather than the file: editors that save by writing a new
//! file and renaming it over the old one (vim, sed -i, Ansible) replace the inode a file watch
//! would follow. Only events that name the file count, or, when the file is a symlink, the
//! first step of its target: a Kubernetes ConfigMap volume updates `mirrors.toml →
//! ..data/mirrors.toml` by swapping `..data`. Other files in the directory (logs written next
//! to the config, say) are ignored, so a busy directory can neither starve reloads nor cost a
//! read each. After a short quiet period a burst of events is reported once, and a file that
//! keeps changing is reported at least every [`MAX_SETTLE`]; the daemon then compares the
//! file's bytes with what it last loaded.

use std::ffi::OsString;
use std::path::{Component, Path};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the file must be quiet before a change is reported: an editor's save is several
/// events.
const SETTLE: Duration = Duration::from_millis(250);
/// The longest a change waits for quiet: a file rewritten without pause is still re-read.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// A message after each burst of changes to the file at `path`.
pub fn changes(path: &Path) -> notify::Result<mpsc::Receiver<()>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let names = watched_names(path);
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file (the daemon's own reloads included) is not a change.
        let is_read = matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write));
        let ours = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|name| names.iter().any(|n| n == name))
        });
        if ours && !is_read {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _watcher = watcher; // watching lasts as long as this task
        while raw_rx.recv().await.is_some() {
            // Wait for the burst to end, or for MAX_SETTLE, whichever comes first.
            let give_up = Instant::now() + MAX_SETTLE;
            while Instant::now() < give_up {
                let quiet = tokio::time::sleep(SETTLE.min(give_up - Instant::now()));
                tokio::select! {
                    more = raw_rx.recv() => if more.is_none() { return },
                    _ = quiet => break,
                }
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The names in the directory whose events mean the file changed: its own, and for a symlink
/// with a relative target the first step of that target (Kubernetes' `..data`).
fn watched_names(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path.file_name().map(OsString::from).into_iter().collect();
    if let Ok(target) = std::fs::read_link(path) {
        if let Some(Component::Normal(first)) = target.components().next() {
            names.push(first.to_os_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configmap_symlink_adds_the_name_kubernetes_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirrors.toml");
        std::fs::write(&file, "").unwrap();
        assert_eq!(watched_names(&file), [OsString::from("mirrors.toml")]);
        std::fs::create_dir(dir.path().join("..2024_01")).unwrap();
        std::fs::write(dir.path().join("..2024_01/mirrors.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2024_01", dir.path().join("..data")).unwrap();
        let linked = dir.path().join("linked.toml");
        std::os::unix::fs::symlink("..data/mirrors.toml", &linked).unwrap();
        assert_eq!(
            watched_names(&linked),
            [OsString::from("linked.toml"), OsString::from("..data")]
        );
    }
}
