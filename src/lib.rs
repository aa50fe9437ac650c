//! regmirror keeps copies of container images in a registry its users control.
//!
//! How a run flows through the modules: config → selection → plan → copy → report.
//!
//! - [`cli`] parses the command line and dispatches; [`logging`] sets up tracing, and
//!   [`progress`] the live status lines of a `--once` at a terminal; [`exit`] holds the exit
//!   codes every layer reports in.
//! - [`config`] reads mirrors.toml in two stages into a validated [`config::Config`]: jobs
//!   (source → target, named by [`reference`]), schedules ([`schedule`]) and the settings of
//!   each registry ([`credentials`], with Docker's credential helpers; ECR's in [`aws`]).
//!   Tag rules are [`selection`]'s. [`shard`] picks one task's share.
//! - [`run`] runs one pass: its plan (repositories with tag rules listed, their tags
//!   selected), then every job compared and, when changed, copied through [`copy`] a bounded
//!   number at once, into a [`run::Report`].
//! - [`copy`] mirrors one image: HEAD both sides, then blobs → child manifests → the tag,
//!   reading manifests with [`manifest`] (the OCI vocabulary every layer uses, its digests
//!   checked by [`digest`]) and placing blobs through [`copy::blobs`] (exists, mount, or
//!   stream, each blob moved once per pass).
//! - [`store`] is where images are kept, behind one interface the copy core and the pass
//!   use: a registry ([`registry::Registries`]), or an OCI image layout on disk
//!   ([`store::layout`], named `oci:/DIR` as skopeo names it), so images cross an air gap.
//! - [`registry`] speaks the distribution protocol itself, with typed errors, every read
//!   bounded in size and time ([`registry::limits`]), and keeps the manners of a careful
//!   client: [`registry::ratelimit`] one pull budget per registry, [`registry::retry`] the one
//!   backoff policy, [`registry::waiting`] waiting within `max_wait` without holding a
//!   concurrency slot. [`registry::hub`] reads Docker Hub's tag API, whose listed digests
//!   spare the pass HEADs of unchanged tags.
//! - [`daemon`] is the long-running mode: each mirror on its [`schedule`], the config reloaded
//!   live ([`daemon::watch`], SIGHUP via [`daemon::signals`]), [`daemon::systemd`] told of
//!   each step, and [`daemon::server`] answering `/healthz`, `/metrics` ([`daemon::metrics`])
//!   and `POST /sync` over connections bounded by [`daemon::http`]; `/healthz` and the status
//!   page at `/` ([`daemon::page`]) are one snapshot ([`daemon::status`]), as JSON and HTML.
//! - [`clients`] writes the settings that send container runtimes' pulls to the mirror
//!   (`regmirror clients`).
//! - [`aws`] sets up the SDK: [`aws::ssm`] reads the image list from Parameter Store,
//!   [`aws::ecr`] gets ECR tokens and creates repositories.
//! - [`signature`] judges whether an image's signatures vouch for it, as a mirror's `verify`
//!   demands: cosign's `.sig` tags and Sigstore bundles, with a key or keyless (Fulcio
//!   certificates, the transparency log), checked offline against a trusted root.
//! - [`reason`] names the class of every failure (`auth`, `not_found`, `rate_limited`…) that
//!   reports, `/healthz`, `/metrics` and alerts count by.
//! - [`untrusted`] makes a registry's names and texts fit to show: clipped, control
//!   characters escaped, wherever they reach a report, a log or `/healthz`.
//!
//! Imports between these top-level modules never go in a circle: `cli` on top; `logging` and
//! `progress` under it; then `daemon`, `run`, `copy`, `store`, `registry` and `config` in that
//! order; `signature`, `aws`, `credentials`, `reference`, `schedule`, `selection`, `shard`, `manifest`,
//! `digest`, `untrusted`, `reason` and `exit` at the bottom.

pub mod aws;
pub mod cli;
pub mod clients;
pub mod config;
pub mod copy;
pub mod credentials;
pub mod daemon;
pub mod digest;
pub mod exit;
pub mod logging;
pub mod manifest;
pub mod progress;
pub mod reason;
pub mod reference;
pub mod registry;
pub mod run;
pub mod schedule;
pub mod selection;
pub mod shard;
pub mod signature;
pub mod store;
pub mod untrusted;
