//! A real CNCF distribution registry (Debian's `docker-registry`, 2.8) per test.
//!
//! Each [`Registry`] owns a temporary directory holding its config, storage and log, listens on
//! a free loopback port and is killed when dropped. Tests never skip when the binary is
//! missing: a missing registry is a broken test machine, and `scripts/test` installs it.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a registry gets to answer `GET /v2/` after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports to try when the one picked was taken before the registry could bind it.
const START_ATTEMPTS: usize = 5;

/// Realm announced in `WWW-Authenticate` when htpasswd auth is on.
pub const REALM: &str = "regmirror-test";

/// Options for [`Registry::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this `(user, password)`; `None` leaves the registry open.
    pub htpasswd: Option<(String, String)>,
}

impl RegistryOptions {
    /// Options for a registry that requires basic auth with `user` and `password`.
    pub fn htpasswd(user: &str, password: &str) -> Self {
        Self {
            htpasswd: Some((user.to_owned(), password.to_owned())),
        }
    }
}

/// A running registry on `127.0.0.1`, killed on drop.
#[derive(Debug)]
pub struct Registry {
    /// The registry process; killed and reaped on drop.
    child: Child,
    /// `127.0.0.1:PORT`.
    host: String,
    /// Credentials when started with htpasswd, so helpers can authenticate automatically.
    credentials: Option<(String, String)>,
    /// Holds config, storage (`data/`) and `registry.log`; removed after the child is dead.
    dir: TempDir,
}

impl Registry {
    /// Starts an open registry (no auth).
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    /// Starts a registry with `options`; panics with the registry's log if it does not come up.
    pub fn start_with(options: RegistryOptions) -> Registry {
        let binary = find_binary();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("regmirror-registry-")
                .tempdir()
                .expect("create registry temp dir");
            let htpasswd = options.htpasswd.as_ref().map(|(user, password)| {
                let path = dir.path().join("htpasswd");
                write_htpasswd(&path, user, password);
                path
            });
            let host = format!("127.0.0.1:{}", free_port());
            // A per-start token echoed in every response, so we know the registry answering on
            // the port is ours and not one another test started on a reused port.
            let instance = format!("{:016x}", rand::random::<u64>());
            let config_path = dir.path().join("config.yml");
            let config = config_yaml(dir.path(), &host, &instance, htpasswd.as_deref());
            fs::write(&config_path, config).expect("write registry config");
            let log = fs::File::create(dir.path().join("registry.log")).expect("create log");
            let child = Command::new(&binary)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
            let mut registry = Registry {
                child,
                host,
                credentials: options.htpasswd.clone(),
                dir,
            };
            match registry.wait_ready(&instance) {
                Ready::Yes => return registry,
                // Most likely the port was taken between picking and binding: try another.
                Ready::Exited => last_log = registry.log(),
                Ready::TimedOut => panic!(
                    "docker-registry on {} did not answer GET /v2/ within {:?}; log:\n{}",
                    registry.host,
                    READY_TIMEOUT,
                    registry.log()
                ),
            }
        }
        panic!("docker-registry failed to start {START_ATTEMPTS} times; last log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`, the form used in image references and `http://` URLs.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The `(user, password)` the registry was started with, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// The registry's storage root, for tests that inspect or damage storage directly.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything the registry has logged so far (access log included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, instance: &str) -> Ready {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("build readiness client");
        let url = format!("{}/v2/", self.url());
        let wanted = if self.credentials.is_some() { 401 } else { 200 };
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ready::Exited;
            }
            if let Ok(response) = client.get(&url).send() {
                let ours = response
                    .headers()
                    .get("x-regmirror-test-instance")
                    .is_some_and(|v| v.as_bytes() == instance.as_bytes());
                if ours && response.status().as_u16() == wanted {
                    return Ready::Yes;
                }
            }
            thread::sleep(Duration::from_millis(25));
        }
        Ready::TimedOut
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Ready {
    Yes,
    Exited,
    TimedOut,
}

/// `docker-registry` from `PATH`, else `/usr/bin/docker-registry`, else a panic saying how to
/// install it.
fn find_binary() -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("docker-registry"))
            .find(|candidate| candidate.is_file())
    });
    let fallback = PathBuf::from("/usr/bin/docker-registry");
    match from_path {
        Some(path) => path,
        None if fallback.is_file() => fallback,
        None => panic!(
            "docker-registry not found: install it with `apt-get install docker-registry` \
             (or run scripts/test, which does)"
        ),
    }
}

/// A loopback port that was free a moment ago. Another process may grab it before the
/// registry binds; [`Registry::start_with`] retries on a new port when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Writes a one-line htpasswd file. Cost 4 keeps logins fast; distribution accepts `$2y$`.
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let hash = bcrypt::hash_with_result(password, 4)
        .expect("bcrypt hash")
        .format_for_version(bcrypt::Version::TwoY);
    fs::write(path, format!("{user}:{hash}\n")).expect("write htpasswd");
}

fn config_yaml(dir: &Path, host: &str, instance: &str, htpasswd: Option<&Path>) -> String {
    let data = dir.join("data");
    let auth = match htpasswd {
        Some(path) => format!(
            "auth:\n  htpasswd:\n    realm: {REALM}\n    path: {}\n",
            path.display()
        ),
        None => String::new(),
    };
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {host}\n  secret: regmirror-test-secret-{instance}\n\
         \x20 headers:\n    X-Regmirror-Test-Instance: [\"{instance}\"]\n\
         {auth}",
        data = data.display(),
    )
}
