//! Docker Hub's behaviour toward clients, as proxy rules in front of a real registry.
//!
//! [`BearerAuth`] is the token flow Docker Hub, GHCR and Quay use: `/v2/` answers 401 with
//! `WWW-Authenticate: Bearer realm=…,service=…`, the client fetches a token from the realm
//! (with basic credentials, or anonymously), and sends it as `Authorization: Bearer …`. The
//! registry behind the proxy is open; the proxy is what insists on tokens.

use std::sync::{Arc, Mutex};

use super::proxy::{Action, RequestInfo, Rule};

/// Tokens issued so far, and how often the token endpoint was asked.
#[derive(Debug, Default)]
pub struct TokenLog {
    pub issued: Vec<String>,
    pub requests: usize,
}

/// The bearer-token flow. Add it first, so it answers before any other rule forwards.
#[derive(Debug)]
pub struct BearerAuth {
    realm: String,
    /// `Basic …` header value the token endpoint requires; `None` issues tokens to anyone.
    required: Option<String>,
    log: Arc<Mutex<TokenLog>>,
}

impl BearerAuth {
    /// Tokens from `http://<proxy_host>/token`, for `credentials` or (when `None`) anyone.
    pub fn new(
        proxy_host: &str,
        credentials: Option<(&str, &str)>,
    ) -> (Self, Arc<Mutex<TokenLog>>) {
        use base64::Engine;
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let log = Arc::new(Mutex::new(TokenLog::default()));
        let rule = BearerAuth {
            realm: format!("http://{proxy_host}/token"),
            required: credentials
                .map(|(user, pass)| format!("Basic {}", encode(&format!("{user}:{pass}")))),
            log: log.clone(),
        };
        (rule, log)
    }

    fn challenge(&self, request: &RequestInfo) -> Action {
        let scope = match request
            .path
            .strip_prefix("/v2/")
            .and_then(|p| p.split_once('/'))
        {
            Some(_) if request.path.contains("/manifests/") || request.path.contains("/blobs/") => {
                let repo = request.path["/v2/".len()..]
                    .split(['/', '?'])
                    .take_while(|part| *part != "manifests" && *part != "blobs")
                    .collect::<Vec<_>>()
                    .join("/");
                format!(",scope=\"repository:{repo}:pull\"")
            }
            _ => String::new(),
        };
        let mut action = Action::error(401, "UNAUTHORIZED", "authentication required");
        if let Action::Respond { headers, .. } = &mut action {
            headers.push((
                "www-authenticate".into(),
                format!(
                    "Bearer realm=\"{}\",service=\"registry.sim\"{scope}",
                    self.realm
                ),
            ));
        }
        action
    }
}

impl Rule for BearerAuth {
    fn decide(&mut self, request: &RequestInfo) -> Option<Action> {
        if request.path.starts_with("/token") {
            let mut log = self.log.lock().unwrap();
            log.requests += 1;
            if let Some(required) = &self.required {
                if request.header("authorization") != Some(required.as_str()) {
                    return Some(Action::error(
                        401,
                        "UNAUTHORIZED",
                        "incorrect username or password",
                    ));
                }
            }
            let token = format!("tok-{:032x}", rand::random::<u128>());
            log.issued.push(token.clone());
            let body =
                serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 });
            return Some(Action::Respond {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
            });
        }
        let presented = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "));
        let valid =
            presented.is_some_and(|t| self.log.lock().unwrap().issued.iter().any(|i| i == t));
        if valid {
            None
        } else {
            Some(self.challenge(request))
        }
    }
}
