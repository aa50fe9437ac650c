//! Real container runtimes, run here to prove the settings `regmirror clients` writes: Debian's
//! `containerd` with `ctr` (as the kubelet's CRI uses it, on a private root and socket) and
//! `skopeo` (containers-registries.conf, as podman, CRI-O and buildah read it).
//!
//! A runtime this needs and cannot find fails the test saying how to install it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::cli::{Run, RunExt};

/// Fails unless `program` is on PATH, naming the Debian package that has it.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "{program} not found: install it with `apt-get install {package}` (or run scripts/test, which does)"
    );
}

/// Fails unless the test runs as root, as containerd needs.
pub fn require_root(what: &str) {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "{what} needs root (containerd mounts and owns its state): run the tests as root, as scripts/test does on CI"
    );
}

/// A containerd of its own: private root, state and socket, the CRI plugin off (no CNI or
/// kubelet here); stopped when dropped.
pub struct Containerd {
    dir: TempDir,
    child: Child,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Containerd {
    pub fn start() -> Containerd {
        require("containerd", "containerd");
        require("ctr", "containerd");
        require_root("containerd");
        let dir = tempfile::Builder::new()
            .prefix("regmirror-containerd-")
            .tempdir()
            .expect("temporary directory");
        let root = dir.path();
        let config = root.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{0}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
                root.display()
            ),
        )
        .expect("write containerd config");
        let log = fs::File::create(root.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Containerd { dir, child };
        let socket = containerd.socket();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                containerd.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd.
    pub fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command.arg("--address").arg(self.socket());
        command
    }

    /// `ctr content fetch --hosts-dir <hosts_dir> <reference>`: resolves the reference and
    /// fetches the manifest, config and layers of this machine's platform, as a pull does
    /// before unpacking.
    pub fn fetch(&self, hosts_dir: &Path, reference: &str) -> Run {
        self.ctr()
            .args(["content", "fetch", "--hosts-dir"])
            .arg(hosts_dir)
            .arg(reference)
            .run()
    }

    /// The digest containerd recorded for an image it fetched.
    pub fn image_digest(&self, reference: &str) -> Option<String> {
        let run = self.ctr().args(["images", "ls"]).run();
        run.stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(reference))
            .and_then(|line| {
                line.split_whitespace()
                    .find(|field| field.starts_with("sha256:"))
                    .map(str::to_owned)
            })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
