//! One writer per layout: an exclusive `flock(2)` on `.regmirror/lock` inside it, held as long
//! as the layout is open for writing (for a pass, the life of its stores; for the daemon, of
//! the process). A second process is refused at once, told which process holds the layout:
//! the holder writes its pid, host and start time into the file. The kernel drops the lock
//! when the holder exits, however it exits, so a killed pass never leaves a layout locked.
//! Readers take no lock: `index.json` is only ever replaced whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Why a layout could not be locked.
#[derive(Debug)]
pub enum Refused {
    /// Another process holds it; what it wrote about itself.
    Busy(String),
    Io(io::Error),
}

/// Takes the lock at `path` without waiting.
pub fn take(path: &Path) -> Result<Held, Refused> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Refused::Io)?;
    let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
    if let Err(errno) = locked {
        if errno != rustix::io::Errno::WOULDBLOCK {
            return Err(Refused::Io(errno.into()));
        }
        let mut holder = String::new();
        let _ = Read::by_ref(&mut file)
            .take(512)
            .read_to_string(&mut holder);
        let holder = crate::untrusted::line(holder.trim(), 200);
        return Err(Refused::Busy(if holder.is_empty() {
            "a process that has not said which".to_string()
        } else {
            holder
        }));
    }
    let about = format!(
        "regmirror pid {} on {}, since {}\n",
        std::process::id(),
        hostname(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(about.as_bytes()))
        .map_err(Refused::Io)?;
    Ok(Held { _file: file })
}

/// This machine's name, for the holder's note.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "this host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let path = std::env::temp_dir().join(format!("regmirror-lock-{}", fastrand::u64(..)));
        let held = take(&path).unwrap();
        // flock locks belong to an open file: a second open is a second holder, even here.
        match take(&path) {
            Err(Refused::Busy(holder)) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                )
            }
            other => panic!("not refused: {other:?}"),
        }
        drop(held);
        assert!(take(&path).is_ok());
        std::fs::remove_file(path).unwrap();
    }
}
