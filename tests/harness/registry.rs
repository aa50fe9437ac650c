//! A real CNCF distribution registry (Debian's `docker-registry`, 2.8) per test.
//!
//! Each [`Registry`] owns a temporary directory holding its config, storage and log, listens on
//! a free loopback port and is killed when dropped. With [`RegistryOptions::tls`] it serves
//! HTTPS with a certificate from a CA of its own, made for it and trusted by nothing else.
//! Tests never skip when the binary is missing: a missing registry is a broken test machine,
//! and `scripts/test` installs it.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use tempfile::TempDir;

use super::remote::{client_builder, plain_client};

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
    /// Serve HTTPS with a certificate for `127.0.0.1` and `localhost` signed by a throwaway CA
    /// of this registry's own (see [`Registry::ca_pem`]); `false` serves plain HTTP.
    pub tls: bool,
    /// Require bearer tokens from this realm (distribution's `auth.token`): `/v2/` answers
    /// 401 with `WWW-Authenticate: Bearer realm="<this>",service="regmirror-test"`. No token
    /// is accepted (none is signed by the registry's bundle): for tests of what a client does
    /// with the challenge.
    pub token_realm: Option<String>,
    /// Deletes turned off (`storage.delete.enabled: false`): every DELETE is answered 405
    /// `UNSUPPORTED`, as registries that never delete answer.
    pub no_deletes: bool,
}

impl RegistryOptions {
    /// Options for a registry that requires basic auth with `user` and `password`.
    pub fn htpasswd(user: &str, password: &str) -> Self {
        Self {
            htpasswd: Some((user.to_owned(), password.to_owned())),
            ..Self::default()
        }
    }

    /// Options for an open registry serving HTTPS under a CA of its own (see
    /// [`Registry::ca_pem`]).
    pub fn tls() -> Self {
        Self {
            tls: true,
            ..Self::default()
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
    /// Set when the registry serves HTTPS.
    tls: Option<Tls>,
    /// Set when it asks for bearer tokens from a realm.
    token_auth: bool,
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
            let tls = options.tls.then(|| Tls::create(dir.path()));
            let host = format!("127.0.0.1:{}", free_port());
            // A per-start token echoed in every response, so we know the registry answering on
            // the port is ours and not one another test started on a reused port.
            let instance = format!("{:016x}", rand::random::<u64>());
            let config_path = dir.path().join("config.yml");
            let auth = match (&htpasswd, &options.token_realm) {
                (Some(path), _) => Auth::Htpasswd(path),
                (None, Some(realm)) => Auth::Token(realm),
                (None, None) => Auth::None,
            };
            let config = config_yaml(dir.path(), &host, &instance, auth, &options);
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
                tls,
                token_auth: options.token_realm.is_some(),
                dir,
            };
            match registry.wait_ready(&instance) {
                Ready::Yes => return registry,
                // Most likely the port was taken between picking and binding: try another.
                Ready::Exited => last_log = registry.log(),
                Ready::TimedOut => panic!(
                    "docker-registry on {} did not answer GET {}/v2/ within {:?}; log:\n{}",
                    registry.host,
                    registry.url(),
                    READY_TIMEOUT,
                    registry.log()
                ),
            }
        }
        panic!("docker-registry failed to start {START_ATTEMPTS} times; last log:\n{last_log}");
    }

    /// The registry process's id (benchmarks read its CPU time from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`, the form used in image references and URLs.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    /// The PEM file of the CA that signed the registry's certificate, when it serves TLS: what
    /// a client must trust (`ca_file` in mirrors.toml) to talk to it.
    pub fn ca_pem(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca_pem.as_path())
    }

    /// A client trusting [`Registry::ca_pem`] when the registry serves TLS; `None` otherwise.
    /// [`super::remote::Remote`] uses it for every request to this registry.
    pub fn tls_client(&self) -> Option<&Client> {
        self.tls.as_ref().map(|tls| &tls.client)
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
        let client = self.tls_client().unwrap_or_else(|| plain_client()).clone();
        let url = format!("{}/v2/", self.url());
        let wanted = if self.credentials.is_some() || self.token_auth {
            401
        } else {
            200
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ready::Exited;
            }
            let request = client.get(&url).timeout(Duration::from_secs(2));
            if let Ok(response) = request.send() {
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

/// A registry's HTTPS setup: its CA, and a client that trusts it.
#[derive(Debug)]
struct Tls {
    /// `ca.pem` in the registry's directory.
    ca_pem: PathBuf,
    client: Client,
}

impl Tls {
    /// Makes a CA and a certificate it signs for `127.0.0.1` and `localhost`, and writes
    /// `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    fn create(dir: &Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            // A name of its own: a client trusting another test registry's CA would otherwise
            // take it for this one's issuer and report a bad signature, not an unknown CA.
            .push(
                DnType::CommonName,
                format!("regmirror test CA {:016x}", rand::random::<u64>()),
            );
        let ca = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("generate registry key");
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let cert = CertificateParams::new(names)
            .expect("certificate names")
            .signed_by(&key, &issuer)
            .expect("sign registry certificate");
        let ca_pem = dir.join("ca.pem");
        fs::write(&ca_pem, ca.pem()).expect("write ca.pem");
        fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert.pem");
        fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key.pem");
        let client = client_builder(Some(ca.pem().as_bytes()))
            .build()
            .expect("build TLS client");
        Tls { ca_pem, client }
    }
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

/// How a registry authenticates its clients.
enum Auth<'a> {
    None,
    /// Basic auth against this htpasswd file.
    Htpasswd(&'a Path),
    /// Bearer tokens from this realm.
    Token(&'a str),
}

/// With `tls`, the certificate and key [`Tls::create`] wrote into `dir`.
fn config_yaml(
    dir: &Path,
    host: &str,
    instance: &str,
    auth: Auth<'_>,
    options: &RegistryOptions,
) -> String {
    let data = dir.join("data");
    let deletes = !options.no_deletes;
    let tls = if options.tls {
        format!(
            "\x20 tls:\n    certificate: {}\n    key: {}\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        )
    } else {
        String::new()
    };
    let auth = match auth {
        Auth::Htpasswd(path) => format!(
            "auth:\n  htpasswd:\n    realm: {REALM}\n    path: {}\n",
            path.display()
        ),
        // The bundle only has to hold a certificate: no token it signed is ever presented.
        Auth::Token(realm) => {
            let bundle = dir.join("token-bundle.pem");
            let signer = rcgen::generate_simple_self_signed(vec!["regmirror-test".to_owned()])
                .expect("make a token signing certificate");
            fs::write(&bundle, signer.cert.pem()).expect("write token bundle");
            format!(
                "auth:\n  token:\n    realm: \"{realm}\"\n    service: regmirror-test\n    \
                 issuer: regmirror-test\n    rootcertbundle: {}\n",
                bundle.display()
            )
        }
        Auth::None => String::new(),
    };
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: {deletes}\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {host}\n  secret: regmirror-test-secret-{instance}\n\
         \x20 headers:\n    X-Regmirror-Test-Instance: [\"{instance}\"]\n\
         {tls}{auth}",
        data = data.display(),
    )
}
