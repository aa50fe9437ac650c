//! Hostile and broken source registries (`harness::hostile`): nested, huge, slow and lying
//! answers each cost the one image they were asked for. The process lives, keeps its memory
//! to a few tens of MiB, ends within its deadlines with exit 1 and a summary line, and every
//! other image is still mirrored.

mod harness;

use std::time::{Duration, Instant};

use harness::hostile::{Body, Content, Hostile, Reply};
use harness::image::{sha256_digest, OCI_INDEX, OCI_MANIFEST};
use harness::*;

/// What a hostile case may cost in memory: the debug binary idles at about 15 MiB; holding a
/// 500 MB manifest, or 10,000 children's work at once, costs hundreds.
const MEMORY_MIB: u64 = 64;

/// A well-behaved image on a real registry, listed after the hostile ones: it must still be
/// mirrored.
struct Bystander {
    _registry: Registry,
    image: Image,
    reference: String,
}

impl Bystander {
    fn start() -> Bystander {
        let registry = Registry::start();
        let image = Image::single(Flavor::Oci, 1, 2048);
        image.push(&registry, "fine/app", "1");
        let reference = format!("{}/fine/app:1", registry.host());
        Bystander {
            _registry: registry,
            image,
            reference,
        }
    }

    #[track_caller]
    fn assert_mirrored(&self, target: &Registry) {
        assert_eq!(
            head_manifest(target, "fine/app", "1").as_deref(),
            Some(self.image.digest())
        );
    }
}

/// How long a hostile case may run before the test calls it hung.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `--once` over `hostile` images and a well-behaved one after them, into a fresh target, with
/// `extra` appended to mirrors.toml. Checks what every case must hold: the process ended on
/// its own with exit 1 (no panic, no abort, within [`TIMEOUT`]), its memory stayed under
/// [`MEMORY_MIB`], and the well-behaved image was mirrored.
fn run_among(hostile: &[String], extra: &str) -> (Run, Registry) {
    run_expecting(hostile, extra, hostile.len())
}

/// [`run_among`], with `failed` failures expected: the hostile images and whatever mirror
/// `extra` adds.
fn run_expecting(hostile: &[String], extra: &str, failed: usize) -> (Run, Registry) {
    let bystander = Bystander::start();
    let target = Registry::start();
    let sandbox = Sandbox::new();
    let quoted: Vec<String> = hostile
        .iter()
        .chain([&bystander.reference])
        .map(|i| format!("\"{i}\""))
        .collect();
    sandbox.write_config(&format!(
        "images = [{}]\n[defaults]\ntarget = \"{}\"\n{extra}",
        quoted.join(", "),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").start().wait(TIMEOUT);
    run.assert_code(1);
    assert!(!run.stderr.contains("panicked"), "{}", run.output());
    assert!(!run.stdout.contains("internal error"), "{}", run.output());
    run.assert_summary(&format!("mirrored 1, unchanged 0, failed {failed} in"));
    run.assert_peak_rss_under(MEMORY_MIB);
    bystander.assert_mirrored(&target);
    (run, target)
}

/// The `FAILED` line of the image whose reference contains `needle`.
#[track_caller]
fn failure<'a>(run: &'a Run, needle: &str) -> &'a str {
    run.failed_lines()
        .into_iter()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no FAILED line for {needle}\n{}", run.output()))
}

/// An index listing `children` (digest, media type, size).
fn index(children: &[(String, &str, usize)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(digest, media_type, size)| {
            serde_json::json!({ "mediaType": media_type, "digest": digest, "size": size })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap()
}

#[test]
fn a_chain_of_three_thousand_nested_indexes_fails_its_image_not_the_process() {
    // index 0 → index 1 → … → index 2999 → an image: built from the bottom up.
    let leaf = Image::single(Flavor::Oci, 1, 1024);
    let mut content = Content::default().image("deep", "leaf", &leaf);
    let mut child = (
        leaf.digest().to_string(),
        OCI_MANIFEST,
        leaf.top().bytes.len(),
    );
    let mut top = Vec::new();
    for _ in 0..3000 {
        top = index(&[child]);
        let digest = sha256_digest(&top);
        content = content.manifest("deep", &digest, &top, OCI_INDEX);
        child = (digest, OCI_INDEX, top.len());
    }
    let content = content.manifest("deep", "1", &top, OCI_INDEX);
    let hostile = Hostile::start(move |request, _| content.reply(request));

    let (run, target) = run_among(&[format!("{}/deep:1", hostile.host())], "");
    let line = failure(&run, "/deep:1");
    assert!(line.contains("nested more than 4 levels deep"), "{line}");
    // Refused at the fifth level: a handful of pulls, not 3,000.
    let pulls = hostile.count(|r| r.is_manifest_get());
    assert!(pulls <= 6, "{pulls} manifest GETs");
    assert!(tags(&target, "deep").is_empty());
}

#[test]
fn an_index_with_thousands_of_children_costs_its_image_and_little_memory() {
    // Every child is missing from the source: the image fails at its first child, and only
    // the few children being fetched may have their work made.
    let missing = |n: usize| -> Vec<(String, &str, usize)> {
        (0..n)
            .map(|i| {
                (
                    sha256_digest(format!("child {i}").as_bytes()),
                    OCI_MANIFEST,
                    500,
                )
            })
            .collect()
    };
    let mut content = Content::default();
    for (repo, children) in [("wide", 10_000), ("wider", 10_001)] {
        let bytes = index(&missing(children));
        content = content.manifest(repo, "1", &bytes, OCI_INDEX).manifest(
            repo,
            &sha256_digest(&bytes),
            &bytes,
            OCI_INDEX,
        );
    }
    let hostile = Hostile::start(move |request, _| content.reply(request));

    let (run, _) = run_among(
        &[
            format!("{}/wide:1", hostile.host()),
            format!("{}/wider:1", hostile.host()),
        ],
        "",
    );
    let wide = failure(&run, "/wide:1");
    assert!(wide.contains("not found"), "{wide}");
    let wider = failure(&run, "/wider:1");
    assert!(
        wider.contains("lists more than 10000 descriptors"),
        "{wider}"
    );
    // The two indexes are pulled by digest; of the children, only the first few.
    let children = hostile.count(|r| r.is_manifest_get() && r.reference() != "1") - 2;
    assert!(children <= 8, "{children} children pulled");
}

#[test]
fn manifests_and_error_bodies_of_hundreds_of_megabytes_are_never_read_whole() {
    const HUGE: u64 = 500_000_000;
    let declared_digest = sha256_digest(b"whatever the registry says");
    let hostile = Hostile::start(move |request, _| {
        if request.is_manifest_head() {
            return Reply::status(200)
                .header("content-type", OCI_MANIFEST)
                .header("docker-content-digest", &declared_digest);
        }
        if !request.is_manifest_get() {
            return Reply::json(200, &serde_json::json!({}));
        }
        let (status, declared) = match request.repo() {
            "declared" => (200, true),
            "undeclared" => (200, false),
            // A server error with a huge page: retried, each time read no further than its
            // first 64 KiB.
            _ => (500, false),
        };
        Reply::status(status)
            .header("content-type", OCI_MANIFEST)
            .body(Body::Repeat {
                byte: b' ',
                len: HUGE,
                declared,
            })
    });

    let started = Instant::now();
    let (run, _) = run_among(
        &[
            format!("{}/declared:1", hostile.host()),
            format!("{}/undeclared:1", hostile.host()),
            format!("{}/erroring:1", hostile.host()),
        ],
        "[rate_limit]\nmax_wait = \"4s\"\n",
    );
    let declared = failure(&run, "/declared:1");
    let expected = "answer too large: a manifest of 476.8 MiB; the limit is 4 MiB";
    assert!(declared.contains(expected), "{declared}");
    let undeclared = failure(&run, "/undeclared:1");
    let expected = "a manifest of more than 4 MiB; the limit is 4 MiB";
    assert!(undeclared.contains(expected), "{undeclared}");
    let erroring = failure(&run, "/erroring:1");
    assert!(erroring.contains("HTTP 500"), "{erroring}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn answers_sent_a_byte_at_a_time_fail_within_max_wait() {
    let image = Image::single(Flavor::Oci, 1, 64 * 1024);
    let content = Content::default()
        .image("slow-manifest", "1", &image)
        .image("slow-blob", "1", &image);
    let layer = image.blobs()[1].0.clone();
    let dribbled = |reply: Reply| {
        let bytes = match &reply.body {
            Body::Bytes(bytes) => bytes.clone(),
            _ => return reply,
        };
        let every = Duration::from_millis(500);
        reply.body(Body::Dribble { bytes, every })
    };
    let source = Hostile::start(move |request, _| {
        let reply = content.reply(request);
        match request.repo() {
            "slow-manifest" if request.is_manifest_get() => dribbled(reply),
            "slow-blob" if request.is_blob_get() && request.reference() == layer => dribbled(reply),
            _ => reply,
        }
    });
    // A registry whose token realm answers a byte at a time.
    let tokens = Hostile::start(move |request, _| {
        if request.path.starts_with("/token") {
            let token = serde_json::json!({ "token": "t".repeat(200) }).to_string();
            return dribbled(Reply::status(200).body(Body::Bytes(token.into_bytes())));
        }
        let host = request.header("host").unwrap_or_default();
        let challenge = format!("Bearer realm=\"http://{host}/token\",service=\"slow\"");
        Reply::json(401, &serde_json::json!({})).header("www-authenticate", &challenge)
    });

    let started = Instant::now();
    let (run, target) = run_among(
        &[
            format!("{}/slow-manifest:1", source.host()),
            format!("{}/slow-blob:1", source.host()),
            format!("{}/slow-token:1", tokens.host()),
        ],
        "[rate_limit]\nmax_wait = \"4s\"\n",
    );
    let took = started.elapsed();
    for (image, action) in [
        ("/slow-manifest:1", "pull manifest"),
        ("/slow-token:1", "authenticate to"),
    ] {
        let line = failure(&run, image);
        assert!(line.contains(action), "{line}");
        assert!(
            line.contains("no complete answer in time (after 4.0 s)"),
            "{line}"
        );
        assert!(line.contains("would pass max_wait (4.0 s)"), "{line}");
    }
    let blob = failure(&run, "/slow-blob:1");
    assert!(blob.contains("transfer stalled"), "{blob}");
    // max_wait is 4 s: one stalled try each, cut off after 4 s, and no second.
    assert!(took < Duration::from_secs(20), "{took:?}\n{}", run.output());
    assert!(tags(&target, "slow-blob").is_empty());
}

/// The page a `tags/list` request asks for: its `page=N`, 0 for the first.
fn page_of(request: &RequestInfo) -> usize {
    request
        .path
        .split_once("page=")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// A tag-list page of `names`, linking to page `page + 1`, and sent as `send` says.
fn endless_page(request: &RequestInfo, names: &[String], send: impl Fn(Vec<u8>) -> Body) -> Reply {
    let repo = request.repo();
    let body = serde_json::json!({ "name": repo, "tags": names }).to_string();
    let next = format!(
        "</v2/{repo}/tags/list?page={}>; rel=\"next\"",
        page_of(request) + 1
    );
    Reply::status(200)
        .header("content-type", "application/json")
        .header("link", &next)
        .body(send(body.into_bytes()))
}

#[test]
fn an_endless_listing_of_huge_names_that_are_not_tags_is_cut_short_and_held_small() {
    // Pages of 8 MiB, each four names of 2 MiB and a fresh `next` link: regmirror 0.1 held
    // every name, 88 MB after two pages and 1 GB after forty.
    const NAME: usize = (2 << 20) - 64;
    let hostile = Hostile::start(move |request, _| {
        if request.endpoint() != harness::proxy::Endpoint::Tags {
            return Content::default().reply(request);
        }
        let page = page_of(request);
        let names: Vec<String> = (0..4)
            .map(|i| {
                let name = format!("{page}-{i}-");
                name.clone() + &"x".repeat(NAME - name.len())
            })
            .collect();
        endless_page(request, &names, Body::Bytes)
    });

    let mirror = format!(
        "[[mirror]]\nsource = \"{}/huge/app\"\ninclude = [\".*\"]\n",
        hostile.host()
    );
    let (run, _) = run_expecting(&[], &mirror, 1);
    eprintln!("peak RSS {} KiB", run.peak_rss_kib.unwrap_or_default());
    let line = failure(&run, "huge/app");
    assert!(
        line.contains("answer too large: a tag listing of 40.0 MiB in 5 pages, with more to come; the limit is 32 MiB"),
        "{line}"
    );
    assert!(line.len() < 400, "{line}");
    let pages = hostile.count(|r| r.endpoint() == harness::proxy::Endpoint::Tags);
    assert_eq!(pages, 5);
}

#[test]
fn names_that_are_not_tags_are_left_out_with_a_warning_that_quotes_a_few_clipped() {
    let image = Image::single(Flavor::Oci, 1, 1024);
    let content = Content::default().image("odd/app", "1.0", &image);
    let hostile = Hostile::start(move |request, _| {
        if request.endpoint() != harness::proxy::Endpoint::Tags {
            return content.reply(request);
        }
        let names = [
            "x".repeat(1 << 20),
            "1.0".to_string(),
            "evil\u{1b}[2J\r\nFAILED everything".to_string(),
            "-dash".to_string(),
            "t".repeat(129),
        ];
        let body = serde_json::json!({ "name": "odd/app", "tags": names }).to_string();
        Reply::status(200)
            .header("content-type", "application/json")
            .body(Body::Bytes(body.into_bytes()))
    });
    let target = Registry::start();
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[defaults]\ntarget = \"{}\"\n[[mirror]]\nsource = \"{}/odd/app\"\ninclude = [\".*\"]\n",
        target.host(),
        hostile.host()
    ));
    let run = sandbox.regmirror().arg("--once").start().wait(TIMEOUT);
    run.assert_success();
    assert_eq!(
        head_manifest(&target, "odd/app", "1.0").as_deref(),
        Some(image.digest())
    );
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains("names that are not valid tags"))
        .unwrap_or_else(|| panic!("no warning\n{}", run.output()));
    assert!(
        warning.contains("lists 4 names that are not valid tags"),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("\"{}… (", "x".repeat(40))),
        "{warning}"
    );
    assert!(warning.contains("and 1 more"), "{warning}");
    assert!(
        !warning.contains('\u{1b}') && !warning.contains('\r'),
        "{warning}"
    );
    assert!(warning.len() < 600, "{} bytes", warning.len());
}

#[test]
fn a_listing_of_slow_pages_fails_within_its_overall_deadline() {
    // Each page comes in 2 s, inside the 3 s that max_wait leaves a request: before the
    // listing had a deadline of its own, this one went on for 2,000 pages.
    let hostile = Hostile::start(move |request, _| {
        if request.endpoint() != harness::proxy::Endpoint::Tags {
            return Content::default().reply(request);
        }
        let names = [format!("p{}", page_of(request))];
        endless_page(request, &names, |bytes| {
            let every = Duration::from_secs(2) / bytes.len() as u32;
            Body::Dribble { bytes, every }
        })
    });
    let mirror = format!(
        "[rate_limit]\nmax_wait = \"3s\"\n[[mirror]]\nsource = \"{}/slow/app\"\ninclude = [\".*\"]\n",
        hostile.host()
    );
    let started = Instant::now();
    let (run, _) = run_expecting(&[], &mirror, 1);
    eprintln!("took {:?}", started.elapsed());
    let line = failure(&run, "slow/app");
    assert!(
        line.contains("stopped: the listing took longer than its overall deadline of 12.0 s (4 × max_wait, at least 10.0 s)"),
        "{line}"
    );
    let pages = hostile.count(|r| r.endpoint() == harness::proxy::Endpoint::Tags);
    assert!((5..=7).contains(&pages), "{pages} pages");
}

#[test]
fn an_index_of_slow_children_fails_within_the_image_deadline_and_moves_no_tag() {
    // Forty children, each answered in 2 s (inside the 3 s a request may take), four at a
    // time: 20 s of child manifests, more than the image's 12 s.
    let platforms: Vec<String> = (0..40).map(|i| format!("linux/arch{i}")).collect();
    let platforms: Vec<&str> = platforms.iter().map(String::as_str).collect();
    let image = Image::multi_arch(Flavor::Oci, &platforms, 1, 256);
    let source = Registry::start();
    image.push(&source, "slow/index", "1");
    let top = image.digest().to_string();
    let proxy = Proxy::start(source.host());
    proxy.add_rule(move |request: &RequestInfo| {
        let child = request.is_manifest_get() && request.reference().starts_with("sha256:");
        (child && request.reference() != top).then(|| Action::Delay(Duration::from_secs(2)))
    });

    let started = Instant::now();
    let (run, target) = run_among(
        &[format!("{}/slow/index:1", proxy.host())],
        "[rate_limit]\nmax_wait = \"3s\"\n",
    );
    eprintln!("took {:?}", started.elapsed());
    let line = failure(&run, "/slow/index:1");
    assert!(
        line.contains("stopped: the image took longer than its overall deadline of 12.0 s"),
        "{line}"
    );
    let children = proxy.count(|r| r.is_manifest_get()) - 1;
    assert!(children < 40, "{children} children pulled");
    assert!(tags(&target, "slow/index").is_empty());
}

#[test]
fn absurd_rate_limit_values_fail_their_image_without_a_panic() {
    let image = Image::single(Flavor::Oci, 1, 1024);
    let content = Content::default()
        .image("reset", "1", &image)
        .image("retry-after", "1", &image);
    let hostile = Hostile::start(move |request, _| {
        let reply = content.reply(request);
        match request.repo() {
            "reset" if request.is_manifest_head() => reply.header(
                "ratelimit",
                "limit=5, remaining=0, reset=18446744073709551615",
            ),
            "retry-after" if request.is_manifest_get() => {
                let refusal = serde_json::json!({
                    "errors": [{ "code": "TOOMANYREQUESTS", "message": "slow down" }]
                });
                Reply::json(429, &refusal)
                    .header("retry-after", "18446744073709551615")
                    .header("ratelimit-remaining", "0;w=60")
            }
            _ => reply,
        }
    });

    let (run, _) = run_among(
        &[
            format!("{}/reset:1", hostile.host()),
            format!("{}/retry-after:1", hostile.host()),
        ],
        "[rate_limit]\nmax_wait = \"1h\"\n",
    );
    for image in ["/reset:1", "/retry-after:1"] {
        let line = failure(&run, image);
        // A day at most: past max_wait, so given up on at once rather than slept through.
        assert!(line.contains("24 h more for"), "{line}");
        assert!(line.contains("would pass max_wait (1 h)"), "{line}");
    }
}

#[test]
fn a_digest_header_that_would_walk_the_url_is_refused() {
    let hostile = Hostile::start(|request, _| {
        if request.is_manifest_head() {
            return Reply::status(200)
                .header("content-type", OCI_MANIFEST)
                .header("docker-content-digest", "sha256:x/../../evil?q=");
        }
        Reply::json(200, &serde_json::json!({}))
    });

    let (run, _) = run_among(&[format!("{}/victim:1", hostile.host())], "");
    let line = failure(&run, "/victim:1");
    let expected = "the registry sent Docker-Content-Digest: invalid digest";
    assert!(line.contains(expected), "{line}");
    let strays: Vec<String> = hostile
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|path| path.contains("evil"))
        .collect();
    assert!(strays.is_empty(), "the digest reached a URL: {strays:?}");
}

#[test]
fn sha512_digests_are_verified_with_sha512() {
    use sha2::{Digest, Sha512};
    let sha512 = |bytes: &[u8]| format!("sha512:{}", hex::encode(Sha512::digest(bytes)));
    let image = Image::single(Flavor::Oci, 1, 1024);
    let bytes = image.top().bytes.clone();
    let honest = sha512(&bytes);
    let lying = sha512(&Image::single(Flavor::Oci, 1, 1024).top().bytes);
    let content = Content::default()
        .image("honest", "1", &image)
        .image("lying", "1", &image)
        .manifest("honest", &honest, &bytes, OCI_MANIFEST)
        .manifest("lying", &lying, &bytes, OCI_MANIFEST);
    let hostile = Hostile::start(move |request, _| {
        let reply = content.reply(request);
        let digest = match request.repo() {
            "honest" => &honest,
            _ => &lying,
        };
        match request.endpoint() {
            harness::proxy::Endpoint::Manifest => reply.set_header("docker-content-digest", digest),
            _ => reply,
        }
    });

    let (run, target) = run_among(&[format!("{}/lying:1", hostile.host())], "");
    let line = failure(&run, "/lying:1");
    assert!(line.contains("content does not match its digest"), "{line}");
    assert!(line.contains("expected sha512:"), "{line}");

    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/honest:1\"]\n[defaults]\ntarget = \"{}\"\n",
        hostile.host(),
        target.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();
    // The target names content by sha256; the bytes are the source's.
    assert_eq!(
        head_manifest(&target, "honest", "1").as_deref(),
        Some(image.digest())
    );
    check_complete(&target, "honest", "1").unwrap();
}

#[test]
fn a_plain_http_token_realm_of_an_https_registry_gets_no_credentials() {
    let realm = Hostile::start(|_, _| Reply::json(200, &serde_json::json!({ "token": "t" })));
    let source = Registry::start_with(RegistryOptions {
        token_realm: Some(format!("http://{}/token", realm.host())),
        ..RegistryOptions::tls()
    });
    let (run, _) = run_among(
        &[format!("{}/team/app:1", source.host())],
        &format!(
            "[registries.\"{}\"]\nca_file = \"{}\"\nusername = \"me\"\npassword = \"pa55-w0rd-in-clear\"\n",
            source.host(),
            source.ca_pem().unwrap().display()
        ),
    );
    let line = failure(&run, "/team/app:1");
    assert!(line.contains("plain-HTTP token realm"), "{line}");
    assert!(line.contains("in clear"), "{line}");
    assert!(realm.requests().is_empty(), "asked: {:?}", realm.requests());
    assert!(!run.output().contains("pa55-w0rd-in-clear"));
}

#[test]
fn a_token_realm_redirecting_to_another_origin_sends_the_refresh_token_nowhere() {
    let elsewhere = Hostile::start(|_, _| Reply::json(200, &serde_json::json!({ "token": "t" })));
    let onward = format!("http://{}/token", elsewhere.host());
    let realm = Hostile::start(move |_, _| Reply::status(307).header("location", &onward));
    let source = Registry::start_with(RegistryOptions {
        token_realm: Some(format!("http://{}/token", realm.host())),
        ..RegistryOptions::default()
    });
    let (run, _) = run_among(
        &[format!("{}/team/app:1", source.host())],
        &format!(
            "[registries.\"{}\"]\nusername = \"<token>\"\npassword = \"refresh-t0ken-s3cret\"\n",
            source.host()
        ),
    );
    let line = failure(&run, "/team/app:1");
    assert!(
        line.contains(&format!(
            "the token realm redirects to http://{}",
            elsewhere.host()
        )),
        "{line}"
    );
    assert!(
        line.contains("follow no redirect to another origin"),
        "{line}"
    );
    // The refresh token was offered to the realm the registry named, and to no one else.
    assert!(
        realm.count(|r| r.method == "POST") >= 1,
        "{:?}",
        realm.requests()
    );
    assert!(
        elsewhere.requests().is_empty(),
        "asked: {:?}",
        elsewhere.requests()
    );
    assert!(!run.output().contains("refresh-t0ken-s3cret"));
}

#[test]
fn a_blob_redirected_to_the_metadata_address_is_refused_before_connecting() {
    let image = Image::single(Flavor::Oci, 1, 2048);
    let content = Content::default().image("team/app", "1", &image);
    let source = Hostile::start(move |request, _| {
        if request.is_blob_get() {
            Reply::status(307).header("location", "http://169.254.169.254/latest/meta-data/")
        } else {
            content.reply(request)
        }
    });
    let (run, _) = run_among(&[format!("{}/team/app:1", source.host())], "");
    let line = failure(&run, "/team/app:1");
    assert!(
        line.contains("a redirect to 169.254.169.254, a link-local or cloud metadata address"),
        "{line}"
    );
    // Refused, not retried: each blob was asked for once.
    let mut gets: Vec<String> = source
        .requests()
        .iter()
        .filter(|r| r.is_blob_get())
        .map(|r| r.path.clone())
        .collect();
    let asked = gets.len();
    gets.sort();
    gets.dedup();
    assert!(asked >= 1 && gets.len() == asked, "{:?}", source.requests());
    assert!(!run.stderr.contains("will retry"), "{}", run.output());
}

/// A registry whose words are hostile: `denied:1` is refused with an error text that
/// repaints the terminal (`ESC`), overwrites its line (`CR`), forges a report line (`LF`) and
/// runs to 60,000 characters; `many` lists three "tags" of 2 MiB, each opening with `ESC`.
fn hostile_words() -> Hostile {
    let image = Image::single(Flavor::Oci, 1, 1024);
    let content = Content::default().image("denied", "1", &image);
    let denial = format!(
        "\u{1b}[2J\u{1b}[Hno\rFAILED      forged → line\n{}",
        "x".repeat(60_000)
    );
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|c| format!("\u{1b}[31m{}", c.repeat(2 << 20)))
        .collect();
    Hostile::start(
        move |request, _| match (request.repo(), request.endpoint()) {
            ("denied", _) if request.is_manifest_get() => Reply::json(
                403,
                &serde_json::json!({ "errors": [{ "code": "DENIED", "message": denial }] }),
            ),
            ("many", harness::proxy::Endpoint::Tags) => {
                Reply::json(200, &serde_json::json!({ "name": "many", "tags": names }))
            }
            _ => content.reply(request),
        },
    )
}

/// mirrors.toml for [`hostile_words`]: `denied:1` and the tags of `many`, into `target`.
fn hostile_words_config(hostile: &Hostile, target: &Registry, extra: &str) -> String {
    format!(
        "images = [\"{host}/denied:1\"]\n[defaults]\ntarget = \"{to}\"\n{extra}\
         [[mirror]]\nsource = \"{host}/many\"\ninclude = [\".*\"]\ntarget = \"{to}/many\"\n",
        host = hostile.host(),
        to = target.host()
    )
}

/// The first 2,000 characters of `text`, for an assertion's message.
fn head(text: &str) -> String {
    text.chars().take(2_000).collect()
}

/// No control character but the line ends, and no line over 4,000 bytes.
#[track_caller]
fn assert_lines_tame(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            !line.chars().any(char::is_control),
            "{what} has a control character: {}",
            head(&line.escape_debug().to_string())
        );
        assert!(
            line.len() <= 4_000,
            "{what} has a line of {} bytes: {}",
            line.len(),
            head(line)
        );
    }
}

#[test]
fn a_registrys_names_and_error_texts_reach_the_report_clipped_and_escaped() {
    let hostile = hostile_words();
    let target = Registry::start();
    let sandbox = Sandbox::new();
    sandbox.write_config(&hostile_words_config(&hostile, &target, ""));
    let run = sandbox.regmirror().arg("--once").start().wait(TIMEOUT);
    run.assert_code(1);
    // The report (what a GitHub step summary shows) and the log.
    assert_lines_tame("the report", &run.stdout);
    assert_lines_tame("the log", &run.stderr);
    assert!(
        run.stdout.len() < 20_000,
        "a report of {} bytes: {}",
        run.stdout.len(),
        head(&run.stdout)
    );
    let denied = failure(&run, "/denied:1");
    assert!(
        denied.contains("access denied: \\u{1b}[2J\\u{1b}[Hno FAILED forged → line xxx"),
        "{}",
        head(denied)
    );
    assert!(denied.contains(" more characters)"), "{}", head(denied));
    // The forged line stays inside the real one.
    assert_eq!(
        run.stdout.matches("FAILED      forged").count(),
        0,
        "{}",
        head(&run.stdout)
    );
    // Names that are not tags are left out of the listing, a few quoted in a warning.
    assert!(
        run.stderr.contains("\\u{1b}[31maaaa"),
        "the names are quoted, escaped: {}",
        head(&run.stderr)
    );
}

#[test]
fn healthz_stays_small_whatever_a_registry_names() {
    let hostile = hostile_words();
    let target = Registry::start();
    let sandbox = Sandbox::new();
    sandbox.write_config(&hostile_words_config(
        &hostile,
        &target,
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let mut daemon = sandbox.regmirror().start();
    let base = format!("http://{}", harness::daemon::server_address(&mut daemon));
    let client = harness::daemon::http();
    let answer = || {
        client
            .get(format!("{base}/healthz"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    harness::daemon::eventually(&daemon, "both mirrors have run", || {
        let health: serde_json::Value = serde_json::from_str(&answer()).unwrap();
        health["mirrors"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["last_run"].is_object()))
    });
    let body = answer();
    assert!(
        body.len() < 64 * 1024,
        "/healthz answers {} bytes",
        body.len()
    );
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    for mirror in health["mirrors"].as_array().unwrap() {
        let errors = mirror["last_run"]["errors"].as_array().unwrap();
        assert!(!errors.is_empty(), "{}", head(&body));
        for error in errors {
            assert_lines_tame("/healthz", error.as_str().unwrap());
            assert!(!error.as_str().unwrap().contains('\n'));
        }
    }
    daemon.terminate();
    daemon.wait(harness::daemon::PATIENCE);
}
