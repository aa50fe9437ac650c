//! Test harness shared by the integration tests: real registries, images built on the fly,
//! a fault-injecting proxy, and a way to run the `regmirror` binary.
//!
//! Every test binary declares `mod harness;` and uses what it needs. Everything here is
//! synchronous for the caller; the proxy runs its own tokio runtime on background threads.
//!
//! - [`registry`]: a throwaway CNCF distribution registry (`docker-registry`) per test.
//! - [`image`]: random images (OCI, Docker v2, multi-arch, artifacts) and pushing them.
//! - [`remote`]: reading a registry back (manifests, blobs, tags, whole-image checks).
//! - [`proxy`]: an HTTP reverse proxy that logs requests and injects faults by rule.
//! - [`tags`]: tag listings paged the ways other registries page them, as proxy rules.
//! - [`runtimes`]: real container runtimes (containerd with ctr, skopeo) for the mirror settings.
//! - [`hub`]: Docker Hub's behaviour as proxy rules (the bearer-token flow, the pull limit);
//!   [`hub_api`]: its tag API (pages of digests, which may lag, and its failures).
//! - [`hostile`]: a registry whose every answer the test chooses (nested, huge, slow, lying).
//! - [`moto`]: AWS on loopback (moto's server mode); [`ecr`]: ECR's registry behaviour as rules.
//! - [`cli`]: runs the `regmirror` binary in a clean environment, with timeouts; [`daemon`]:
//!   the daemon started, its endpoint found, conditions polled.
//! - [`server`]: the loopback HTTP server under the proxy and the hostile registry.
//! - [`browser`]: a real browser (Debian's chromium, headless): a page's DOM read back, a
//!   screenshot.

// Each test binary uses a different subset of the harness, so unused items are expected.
#![allow(dead_code)]

pub mod browser;
pub mod cli;
pub mod cosign;
pub mod daemon;
pub mod ecr;
pub mod hostile;
pub mod hub;
pub mod hub_api;
pub mod image;
pub mod moto;
pub mod proxy;
pub mod registry;
pub mod remote;
pub mod runtimes;
pub mod server;
pub mod sigstore;
pub mod tags;

// Re-exported for `use harness::*`; each binary uses only some of them.
#[allow(unused_imports)]
pub use cli::{images_config, regmirror, write_config, Run, RunExt, Sandbox, Spawned};
#[allow(unused_imports)]
pub use hub::{
    BearerAuth, HeaderStyle, PullLimit, PullLimitOptions, PullLog, Refused, RetryAfter, Verdict,
};
#[allow(unused_imports)]
pub use image::{sha256_digest, Flavor, Image, ImageBuilder, Layer, Pushed, EIGHT_PLATFORMS};
#[allow(unused_imports)]
pub use proxy::{Action, Answer, Holder, Link, Logged, Proxy, RequestInfo, Rule};
#[allow(unused_imports)]
pub use registry::{Registry, RegistryOptions};
#[allow(unused_imports)]
pub use remote::{
    blob_exists, check_complete, delete_blob, delete_manifest, get_blob, get_manifest,
    head_manifest, poll_manifest, tags, Remote,
};
#[allow(unused_imports)]
pub use tags::{paged_tags, unsorted_tags, LinkStyle, Paging};
