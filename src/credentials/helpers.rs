//! Docker credential helpers: credentials kept by a program rather than in config.json.
//!
//! The protocol is Docker's: `docker-credential-<name> get`, with the registry's server URL
//! on stdin (`https://index.docker.io/v1/` for Docker Hub, the host for any other), prints
//! `{"ServerURL": …, "Username": …, "Secret": …}`; a username of `<token>` makes the secret an
//! identity token. A helper that does not know the registry exits non-zero saying
//! `credentials not found`.
//!
//! A registry named in `credHelpers` (or logged in to through `credsStore`, so listed in
//! `auths`) must get credentials: a helper that is missing, fails or knows nothing of it is
//! an error naming the helper and the registry, never a silent anonymous pull (on Docker Hub
//! that is the anonymous limit, the very thing regmirror exists to avoid). Only `credsStore`,
//! asked about a registry never logged in to, may answer "not found", which means anonymous.
//!
//! Helpers run when a registry is first used, each under a deadline and with their output
//! bounded; what they answer is kept for [`HELPER_TTL`], so a pass asks once per registry and
//! a long-running daemon picks up renewed credentials. A failure is kept for
//! [`HELPER_FAILURE_TTL`], so a broken helper is not run again for every image. Runs are
//! serialised per helper and server URL only: one hung helper delays no other registry.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Credentials, Secret};
use crate::reference::DOCKER_HUB;

/// The longest a helper may take (one unlocking a keychain may wait for a person).
pub const HELPER_DEADLINE: Duration = Duration::from_secs(30);
/// How long a helper's answer is used before it is asked again.
pub const HELPER_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a helper's failure is given as the answer before it is run again: longer than
/// [`HELPER_DEADLINE`], so images queued behind a hung helper fail with its error instead of
/// each waiting out the deadline again; short enough that a keychain unlocked or a helper
/// installed is noticed within a minute.
pub const HELPER_FAILURE_TTL: Duration = Duration::from_secs(60);
/// The most of a helper's output read.
const MAX_OUTPUT: u64 = 64 * 1024;
/// What helpers print when they hold nothing for a registry.
const NOT_FOUND: &str = "credentials not found";

/// A credential helper, as config.json names it for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// `<name>` of `docker-credential-<name>`.
    pub name: String,
    /// Where config.json named it: `credHelpers` or `credsStore`.
    pub key: &'static str,
    /// The registry, as regmirror names it.
    pub registry: String,
    /// What the helper is asked for: Docker's key for the registry.
    pub server_url: String,
    /// Whether "not found" is an error rather than anonymous access.
    pub required: bool,
}

/// Why a helper gave no credentials. Messages name the helper and the registry, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential helper {program} ({key} in Docker's config.json) for {registry}: {reason}")]
pub struct HelperError {
    pub program: String,
    pub key: &'static str,
    pub registry: String,
    pub reason: String,
}

impl Helper {
    /// `None` when `name` could be anything but a program name (`../x` would run another file).
    pub fn new(name: &str, key: &'static str, registry: &str, required: bool) -> Option<Helper> {
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !name.starts_with('.');
        let server_url = match registry {
            DOCKER_HUB => "https://index.docker.io/v1/".to_string(),
            other => other.to_string(),
        };
        plain.then(|| Helper {
            name: name.to_string(),
            key,
            registry: registry.to_string(),
            server_url,
            required,
        })
    }

    pub fn program(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    fn error(&self, reason: impl Into<String>) -> HelperError {
        HelperError {
            program: self.program(),
            key: self.key,
            registry: self.registry.clone(),
            reason: reason.into(),
        }
    }

    /// Runs `<program> get`: the registry's credentials, or `None` when the helper holds
    /// none and that is allowed.
    pub async fn get(&self) -> Result<Option<Credentials>, HelperError> {
        let answer = tokio::time::timeout(HELPER_DEADLINE, self.run()).await;
        let (success, stdout, stderr) = answer.map_err(|_| {
            self.error(format!(
                "gave no answer within {} s",
                HELPER_DEADLINE.as_secs()
            ))
        })??;
        if !success {
            let said = format!("{stderr} {stdout}");
            if said.to_ascii_lowercase().contains(NOT_FOUND) {
                return self.not_found();
            }
            // stderr only: a broken helper might print a secret on stdout.
            return Err(self.error(format!("failed: {}", first_line(&stderr))));
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let answer: Answer = serde_json::from_str(&stdout).map_err(|e| {
            self.error(format!(
                "answered something that is not its JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if answer.secret.is_empty() {
            return self.not_found();
        }
        Ok(Some(Credentials {
            username: answer.username,
            password: Secret::new(answer.secret),
        }))
    }

    fn not_found(&self) -> Result<Option<Credentials>, HelperError> {
        if self.required {
            Err(self.error(format!(
                "holds no credentials for {} (log in with `docker login {}`)",
                self.server_url, self.registry
            )))
        } else {
            tracing::info!(registry = %self.registry, helper = %self.program(), "the credential store holds nothing for this registry: reaching it anonymously");
            Ok(None)
        }
    }

    /// The helper's exit status and output (each read up to [`MAX_OUTPUT`]).
    async fn run(&self) -> Result<(bool, String, String), HelperError> {
        let mut child = tokio::process::Command::new(self.program())
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => self.error(format!(
                    "is not installed: {} is not on PATH",
                    self.program()
                )),
                _ => self.error(format!("cannot be run: {e}")),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading its input is judged by its answer.
            let _ = stdin.write_all(self.server_url.as_bytes()).await;
        }
        let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
            let mut text = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut text).await;
            }
            String::from_utf8_lossy(&text).into_owned()
        };
        let stdout = child.stdout.take().map(|p| Box::new(p) as _);
        let stderr = child.stderr.take().map(|p| Box::new(p) as _);
        let (stdout, stderr) = tokio::join!(read(stdout), read(stderr));
        let status = child
            .wait()
            .await
            .map_err(|e| self.error(format!("cannot be waited for: {e}")))?;
        Ok((status.success(), stdout, stderr))
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim();
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None if line.is_empty() => "no message".to_string(),
        None => line.to_string(),
    }
}

/// A helper's answer, or its failure, and when it was given.
type Answered = (Instant, Result<Option<Credentials>, HelperError>);

/// One (helper, server URL)'s last answer; its lock is held while the helper runs.
type Slot = Arc<tokio::sync::Mutex<Option<Answered>>>;

/// What helpers answered: an answer kept for [`HELPER_TTL`], a failure for
/// [`HELPER_FAILURE_TTL`]. One run at a time per helper and server URL, and only per those: a
/// helper that hangs for one registry holds up only the images of that registry, never a
/// login to another.
#[derive(Debug, Default)]
pub struct HelperLogins {
    /// By (helper name, server URL); held only to find or add a slot, never across a run.
    slots: std::sync::Mutex<HashMap<(String, String), Slot>>,
}

impl HelperLogins {
    /// `helper`'s credentials, or its failure, from its last answer if that is recent enough.
    pub async fn get(&self, helper: &Helper) -> Result<Option<Credentials>, HelperError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let key = (helper.name.clone(), helper.server_url.clone());
            slots.entry(key).or_default().clone()
        };
        // Held while the helper runs, so concurrent images of this registry ask it once and
        // those queued behind a failure read it rather than run the helper again.
        let mut last = slot.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            let kept_for = match answer {
                Ok(_) => HELPER_TTL,
                Err(_) => HELPER_FAILURE_TTL,
            };
            if at.elapsed() < kept_for {
                return answer.clone();
            }
        }
        let answer = helper.get().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}
