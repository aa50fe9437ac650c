//! AWS on loopback: moto's server mode (PyPI `moto[server]`), one per test.
//!
//! `scripts/test` installs it into the repository's `.venv`. A test that needs it and cannot
//! find it fails saying how to install it, as for `docker-registry`. The binary under test
//! reaches it through `AWS_ENDPOINT_URL` with dummy credentials; the test's own calls (to
//! create parameters, or look at repositories) go through the same SDK the binary uses.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server; stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub endpoint: String,
    runtime: tokio::runtime::Runtime,
    config: aws_config::SdkConfig,
}

pub const REGION: &str = "eu-west-1";

fn moto_server() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    panic!(
        "moto_server not found at {}: run scripts/test once (it creates .venv with moto[server]), \
         or: python3 -m venv .venv && .venv/bin/pip install 'moto[server]'",
        venv.display()
    );
}

impl Moto {
    pub fn start() -> Moto {
        let binary = moto_server();
        let port = super::registry::free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {endpoint}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for AWS calls");
        let config = runtime.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(REGION))
                .endpoint_url(&endpoint)
                .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                    "testing", "testing", None, None, "moto",
                ))
                .load(),
        );
        Moto {
            child,
            endpoint,
            runtime,
            config,
        }
    }

    /// The environment the binary needs to talk to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }

    /// Creates or overwrites an SSM parameter: `kind` is `StringList`, `String` or
    /// `SecureString`.
    pub fn put_parameter(&self, name: &str, kind: &str, value: &str) {
        let client = aws_sdk_ssm::Client::new(&self.config);
        self.runtime
            .block_on(
                client
                    .put_parameter()
                    .name(name)
                    .r#type(kind.into())
                    .value(value)
                    .overwrite(true)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put_parameter {name}: {e:?}"));
    }

    /// Names of the ECR repositories moto holds.
    pub fn ecr_repositories(&self) -> Vec<String> {
        let client = aws_sdk_ecr::Client::new(&self.config);
        let answer = self
            .runtime
            .block_on(client.describe_repositories().send())
            .unwrap_or_else(|e| panic!("describe_repositories: {e:?}"));
        let mut names: Vec<String> = answer
            .repositories()
            .iter()
            .filter_map(|r| r.repository_name().map(str::to_string))
            .collect();
        names.sort();
        names
    }
}

/// What a proxy rule needs to know of a repository of moto's ECR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Created with `imageTagMutability = IMMUTABLE`.
    pub immutable: bool,
}

/// A repository of moto's ECR, if it holds it; callable from anywhere, a proxy rule included.
pub type RepositoryLookup = Box<dyn Fn(&str) -> Option<Held> + Send>;

impl Moto {
    /// A look in moto's ECR for one repository. Each call asks moto on a thread of its own,
    /// so it works inside another runtime (the proxy's).
    pub fn repository_lookup(&self) -> RepositoryLookup {
        let config = self.config.clone();
        Box::new(move |name: &str| {
            let (config, name) = (config.clone(), name.to_string());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let client = aws_sdk_ecr::Client::new(&config);
                let answer = runtime
                    .block_on(client.describe_repositories().repository_names(name).send())
                    .ok()?;
                let repository = answer.repositories().first()?;
                Some(Held {
                    immutable: repository
                        .image_tag_mutability()
                        .is_some_and(|m| m.as_str() == "IMMUTABLE"),
                })
            })
            .join()
            .expect("the lookup thread")
        })
    }

    /// Records in moto's ECR that `repository`'s `tag` holds `manifest` (PutImage), as ECR
    /// would after a push.
    pub fn ecr_put_image(&self, repository: &str, tag: &str, manifest: &str, media_type: &str) {
        let client = aws_sdk_ecr::Client::new(&self.config);
        self.runtime
            .block_on(
                client
                    .put_image()
                    .repository_name(repository)
                    .image_tag(tag)
                    .image_manifest(manifest)
                    .image_manifest_media_type(media_type)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put_image {repository}:{tag}: {e:?}"));
    }

    /// The tags moto's ECR holds in `repository` (ListImages), sorted.
    pub fn ecr_tags(&self, repository: &str) -> Vec<String> {
        let client = aws_sdk_ecr::Client::new(&self.config);
        let answer = self
            .runtime
            .block_on(client.list_images().repository_name(repository).send())
            .unwrap_or_else(|e| panic!("list_images {repository}: {e:?}"));
        let mut tags: Vec<String> = answer
            .image_ids()
            .iter()
            .filter_map(|id| id.image_tag().map(str::to_string))
            .collect();
        tags.sort();
        tags
    }

    /// A repository of moto's ECR as DescribeRepositories shows it, with its tags.
    pub fn ecr_repository(
        &self,
        name: &str,
    ) -> (aws_sdk_ecr::types::Repository, Vec<(String, String)>) {
        let client = aws_sdk_ecr::Client::new(&self.config);
        let answer = self
            .runtime
            .block_on(client.describe_repositories().repository_names(name).send())
            .unwrap_or_else(|e| panic!("describe_repositories {name}: {e:?}"));
        let repository = answer.repositories()[0].clone();
        let arn = repository.repository_arn().expect("an ARN").to_string();
        let tags = self
            .runtime
            .block_on(client.list_tags_for_resource().resource_arn(arn).send())
            .unwrap_or_else(|e| panic!("list_tags_for_resource {name}: {e:?}"));
        let mut tags: Vec<(String, String)> = tags
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        tags.sort();
        (repository, tags)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
