//! A layout's files, confined to its directory: which path a name may become, reading one
//! without following a link out of the layout or reading past a bound, and replacing one so
//! that its name holds the old bytes or the new, never part of either.
//!
//! A digest becomes a path only once [`crate::digest::parse`] has accepted it (its exact
//! `<algorithm>:<hex>` form, no `/` or `..`), and every file is opened with `O_NOFOLLOW`
//! under directories that are not links themselves, so a layout from untrusted media cannot
//! point regmirror at `/etc/shadow` or `/dev/zero`. Files are written under
//! `.regmirror/tmp/` in the layout (the same file system, so a rename is atomic), flushed to
//! disk, renamed into place, and their directory flushed too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// regmirror's own directory in a layout: its lock and its files being written.
pub const OWN_DIR: &str = ".regmirror";

/// Temporary files made by this process so far, for unique names.
static MADE: AtomicU64 = AtomicU64::new(0);

/// `O_NOFOLLOW`, so a link is never opened, and `O_NONBLOCK`, so a FIFO cannot hold the
/// open (the file is refused once opened, as it is not a regular file).
fn no_links_no_waits() -> i32 {
    use rustix::fs::OFlags;
    // The flags are small positive constants: the cast loses nothing.
    (OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32
}

/// The paths of one layout.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
}

impl Files {
    pub fn new(root: PathBuf) -> Self {
        Files { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub fn marker(&self) -> PathBuf {
        self.root.join("oci-layout")
    }

    pub fn lock(&self) -> PathBuf {
        self.root.join(OWN_DIR).join("lock")
    }

    pub fn temp_dir(&self) -> PathBuf {
        self.root.join(OWN_DIR).join("tmp")
    }

    /// `blobs/<algorithm>/<hex>` of `digest`, once the digest is known well-formed.
    pub fn blob(&self, digest: &str) -> Result<PathBuf, String> {
        crate::digest::parse(digest).map_err(|e| e.to_string())?;
        let (algorithm, hex) = digest.split_once(':').expect("a parsed digest has a colon");
        Ok(self.root.join("blobs").join(algorithm).join(hex))
    }

    /// Opens `path` (inside the layout) for reading: a regular file, reached through no link.
    pub fn open(&self, path: &Path) -> io::Result<File> {
        let relative = path
            .strip_prefix(&self.root)
            .map_err(|_| io::Error::other("is outside the layout"))?;
        let mut within = self.root.clone();
        let parts: Vec<_> = relative.components().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            within.push(part);
            if fs::symlink_metadata(&within)?.file_type().is_symlink() {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link, which a layout may not hold",
                    within.display()
                )));
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(no_links_no_waits())
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(errno) if errno == rustix::io::Errno::LOOP.raw_os_error() => {
                    io::Error::other("is a symbolic link, which a layout may not hold")
                }
                _ => e,
            })?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("is not a regular file"));
        }
        Ok(file)
    }

    /// Whether `path` is a regular file in the layout (not a link).
    pub fn holds(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
    }

    /// The bytes of `path`, at most `cap` of them; `Ok(None)` when it holds more.
    pub fn read(&self, path: &Path, cap: usize) -> io::Result<Option<Vec<u8>>> {
        let file = self.open(path)?;
        if file.metadata()?.len() > cap as u64 {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        file.take(cap as u64 + 1).read_to_end(&mut bytes)?;
        Ok((bytes.len() <= cap).then_some(bytes))
    }

    /// A new, empty file under `.regmirror/tmp/`, for bytes that get a name once complete.
    pub fn temp(&self) -> io::Result<(PathBuf, File)> {
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let path = self.temp_dir().join(format!(
            "{}-{made}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Puts `bytes` at `path` whole: written to a temporary file, flushed, renamed over
    /// `path`, the directory flushed.
    pub fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let (temp, mut file) = self.temp()?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        self.settle(&temp, path)
    }

    /// Renames the complete, flushed file `temp` to `path` and flushes `path`'s directory, so
    /// the name survives a crash.
    pub fn settle(&self, temp: &Path, path: &Path) -> io::Result<()> {
        if let Err(e) = fs::rename(temp, path) {
            let _ = fs::remove_file(temp);
            return Err(e);
        }
        let parent = path.parent().unwrap_or(&self.root);
        File::open(parent)?.sync_all()
    }

    /// Makes the directories a writer needs, and empties `.regmirror/tmp/` of what a process
    /// killed while writing left there.
    pub fn prepare(&self) -> io::Result<()> {
        for algorithm in ["sha256", "sha512"] {
            fs::create_dir_all(self.root.join("blobs").join(algorithm))?;
        }
        let temp = self.temp_dir();
        fs::create_dir_all(&temp)?;
        for entry in fs::read_dir(&temp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (PathBuf, Files) {
        let root = std::env::temp_dir().join(format!(
            "regmirror-files-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let files = Files::new(root.clone());
        files.prepare().unwrap();
        (root, files)
    }

    #[test]
    fn only_well_formed_digests_become_paths() {
        let (root, files) = layout();
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            files.blob(&good).unwrap(),
            root.join("blobs/sha256").join("a".repeat(64))
        );
        for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC", ""] {
            assert!(files.blob(bad).is_err(), "{bad}");
        }
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn links_and_oversized_files_are_not_read() {
        let (root, files) = layout();
        let index = files.index();
        files.replace(&index, b"{}").unwrap();
        assert_eq!(files.read(&index, 10).unwrap().unwrap(), b"{}");
        assert_eq!(files.read(&index, 1).unwrap(), None);
        let blob = files.blob(&format!("sha256:{}", "b".repeat(64))).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &blob).unwrap();
        let refused = files.read(&blob, 1 << 20).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert!(!files.holds(&blob));
        // A linked directory on the way is refused too.
        fs::remove_dir_all(root.join("blobs/sha512")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("blobs/sha512")).unwrap();
        let through = root.join("blobs/sha512/hostname");
        assert!(files
            .read(&through, 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert!(files
            .read(&root.join("blobs"), 10)
            .unwrap_err()
            .to_string()
            .contains("regular file"));
        // Leftovers of a killed writer go at the next start.
        files.temp().unwrap();
        files.prepare().unwrap();
        assert_eq!(fs::read_dir(files.temp_dir()).unwrap().count(), 0);
        fs::remove_dir_all(root).unwrap();
    }
}
