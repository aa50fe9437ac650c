//! regmirror keeps copies of container images in a registry its users control.
//!
//! How a run flows through the modules:
//!
//! - [`cli`] parses the command line and dispatches; [`logging`] sets up tracing.
//! - [`config`] reads mirrors.toml in two stages into a validated [`config::Config`]: jobs
//!   (source → target, built by [`reference`]) and per-registry settings ([`credentials`]).
//! - [`run`] runs one pass: every job through [`copy`], a bounded number at once, into a
//!   [`run::Report`].
//! - [`copy`] mirrors one image: HEAD both sides, then blobs → child manifests → the tag,
//!   reading manifests with [`manifest`] and placing blobs through [`blobs`] (exists, mount,
//!   or stream, each blob moved once per pass).
//! - [`registry`] speaks the distribution protocol through oci-client, with typed errors;
//!   [`ratelimit`] keeps one pull budget per registry, [`retry`] the one backoff policy, and
//!   [`waiting`] lets an image wait within `max_wait` without holding a concurrency slot.
//!
//! Without `--once`, [`daemon`] runs each mirror on its [`schedule`]: [`watch`] and SIGHUP
//! ([`signals`]) reload the config live, SIGTERM stops it cleanly, [`systemd`] hears about
//! each step, and [`server`] answers `/healthz`, `/metrics` ([`metrics`]) and `POST /sync`.
//!
//! On AWS ([`aws`] sets up the SDK): [`ssm`] reads the image list from Parameter Store,
//! [`ecr`] gets ECR tokens and creates repositories, and [`shard`] splits a list between tasks.

pub mod aws;
pub mod blobs;
pub mod cli;
pub mod config;
pub mod copy;
pub mod credentials;
pub mod daemon;
pub mod ecr;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod ratelimit;
pub mod reference;
pub mod registry;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod server;
pub mod shard;
pub mod signals;
pub mod ssm;
pub mod systemd;
pub mod waiting;
pub mod watch;
