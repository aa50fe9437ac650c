//! Benchmark, scenario 10 (issue 21): across an air gap through an OCI image layout, against
//! Debian's `skopeo sync --dest dir` on the 60 two-platform tags of scenario 1 (skopeo 1.9 has
//! no `--dest oci`, added in later versions; `dir` is the same one-directory-per-tag export).
//!
//! 10a. exporting the 60 tags into an empty layout: wall time, bytes on disk of each tool's
//!      output against the unique bytes of the images (skopeo writes one layout per tag);
//! 10b. the export again, unchanged: pulls at the source, and whether the layout changed;
//! 10c. importing the layout into a registry that already holds all but one image: the blob
//!      uploads it takes, against the blobs that one image lacks.
//!
//! Each round exports into fresh directories, tools alternating first. Ignored by default:
//! `scripts/bench layout` runs it in release mode.

mod bench;
mod harness;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use bench::measure::{measure, regmirror_in, require_tools, skopeo, strings, Measured};
use bench::report::{
    fmt_bytes, fmt_list, fmt_median_secs, fmt_secs, median, publish, render_rows, secs, Row,
};
use bench::Settings;
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];
const TAGS: usize = 3;
const LAYERS: usize = 3;

/// The source of scenario 1's 60 tags, and what they weigh once each.
struct Seeded {
    source: Registry,
    /// `(repo, tag, digest)`.
    tags: Vec<(String, String, String)>,
    /// Manifests, configs and layers, each digest once.
    unique_bytes: u64,
    /// Blobs (configs and layers) of the last tag, which the import's target lacks.
    last_blobs: usize,
}

fn seed(settings: &Settings) -> Seeded {
    let source = Registry::start();
    let (mut tags, mut unique, mut last_blobs) = (Vec::new(), BTreeSet::new(), 0);
    for r in 0..settings.repos {
        let flavor = if r % 2 == 0 {
            Flavor::Docker
        } else {
            Flavor::Oci
        };
        let repo = format!("bench/app{r:02}");
        for t in 1..=TAGS {
            let image = Image::multi_arch(flavor, PLATFORMS, LAYERS, settings.layer_size);
            let pushed = image.push(&source, &repo, &format!("v{t}"));
            last_blobs = pushed.blobs.len();
            unique.extend(pushed.blobs.iter().cloned());
            for manifest in std::iter::once(image.top()).chain(image.children()) {
                unique.insert((manifest.digest.clone(), manifest.bytes.len() as u64));
            }
            tags.push((repo.clone(), format!("v{t}"), pushed.digest));
        }
    }
    Seeded {
        source,
        tags,
        unique_bytes: unique.iter().map(|(_, size)| size).sum(),
        last_blobs,
    }
}

impl Seeded {
    /// mirrors.toml exporting every tag from `source` into `layout`.
    fn export(&self, source: &str, layout: &str) -> String {
        let images: Vec<String> = self
            .tags
            .iter()
            .map(|(repo, tag, _)| format!("  \"{source}/{repo}:{tag}\","))
            .collect();
        format!(
            "images = [\n{}\n]\n[defaults]\ntarget = \"{layout}\"\n",
            images.join("\n")
        )
    }

    /// skopeo's YAML: the same repositories and tags.
    fn skopeo_yaml(&self, source: &str) -> String {
        let mut yaml = format!("\"{source}\":\n  tls-verify: false\n  images:\n");
        let repos: BTreeSet<&str> = self.tags.iter().map(|(r, _, _)| r.as_str()).collect();
        for repo in repos {
            let tags: Vec<String> = self
                .tags
                .iter()
                .filter(|(r, _, _)| r == repo)
                .map(|(_, t, _)| format!("\"{t}\""))
                .collect();
            writeln!(yaml, "    {repo}: [{}]", tags.join(", ")).unwrap();
        }
        yaml
    }
}

/// Bytes of every file under `dir`.
fn bytes_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                bytes_on_disk(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Names of the layout's blobs and when its index was last replaced.
fn layout_state(dir: &Path) -> (BTreeSet<String>, SystemTime) {
    let blobs = fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    (
        blobs,
        fs::metadata(dir.join("index.json"))
            .unwrap()
            .modified()
            .unwrap(),
    )
}

fn export_regmirror(seeded: &Seeded, sandbox: &Sandbox, source: &str, dir: &Path) -> Measured {
    let path = sandbox.write_config(&seeded.export(source, &format!("oci:{}", dir.display())));
    let mut command = regmirror_in(sandbox);
    command.arg("--once").arg("--config").arg(path);
    measure(&command, &sandbox.path().join("time.txt"))
}

fn export_skopeo(seeded: &Seeded, sandbox: &Sandbox, dir: &Path) -> Measured {
    let yaml = sandbox.write_file("sync.yaml", &seeded.skopeo_yaml(seeded.source.host()));
    let mut args = strings(&[
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "yaml",
        "--dest",
        "dir",
    ]);
    args.push(yaml.to_string_lossy().into_owned());
    args.push(dir.to_string_lossy().into_owned());
    fs::create_dir_all(dir).unwrap();
    measure(&skopeo(sandbox, &args), &sandbox.path().join("time.txt"))
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenario_10_sixty_tags_across_an_air_gap_through_a_layout() {
    let settings = Settings::from_env();
    let version = require_tools(true).unwrap_or_default();
    let seeded = seed(&settings);
    let ntags = seeded.tags.len();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_bytes, mut their_bytes) = (0, 0);
    let mut problems = Vec::new();
    for round in 0..settings.rounds {
        let sandbox = Sandbox::new();
        let (layout, per_tag) = (sandbox.path().join("layout"), sandbox.path().join("skopeo"));
        let mut run = |first: bool| {
            if first {
                let measured = export_regmirror(&seeded, &sandbox, seeded.source.host(), &layout);
                if !measured.ok() {
                    problems.push(format!("regmirror export failed:\n{}", measured.output));
                }
                ours.push(measured);
            } else {
                let measured = export_skopeo(&seeded, &sandbox, &per_tag);
                if !measured.ok() {
                    problems.push(format!("skopeo sync failed:\n{}", measured.output));
                }
                theirs.push(measured);
            }
        };
        run(round % 2 == 0);
        run(round % 2 != 0);
        our_bytes = bytes_on_disk(&layout) - bytes_on_disk(&layout.join(".regmirror"));
        their_bytes = bytes_on_disk(&per_tag);
        eprintln!(
            "round {}: regmirror {:.2} s, skopeo {:.2} s",
            round + 1,
            ours.last().unwrap().took.as_secs_f64(),
            theirs.last().unwrap().took.as_secs_f64()
        );
    }

    // 10b and 10c on one more layout, through counting proxies.
    let sandbox = Sandbox::new();
    let layout = sandbox.path().join("layout");
    let source = Proxy::start(seeded.source.host());
    export_regmirror(&seeded, &sandbox, source.host(), &layout);
    let before = layout_state(&layout);
    source.clear();
    let unchanged = export_regmirror(&seeded, &sandbox, source.host(), &layout);
    let rerun_pulls = source.manifest_gets();
    let untouched = layout_state(&layout) == before;
    let name = format!("oci:{}", layout.display());
    let far_registry = Registry::start();
    let far = Proxy::start(far_registry.host());
    let import = |tags: &[(String, String, String)]| {
        let images: Vec<String> = tags
            .iter()
            .map(|(repo, tag, _)| format!("\"{name}:{repo}:{tag}\""))
            .collect();
        let config = format!(
            "images = [{}]\n[defaults]\ntarget = \"{}\"\n",
            images.join(", "),
            far.host()
        );
        let path = sandbox.write_config(&config);
        let mut command = regmirror_in(&sandbox);
        command.arg("--once").arg("--config").arg(path);
        measure(&command, &sandbox.path().join("time.txt"))
    };
    let first = import(&seeded.tags[..ntags - 1]);
    far.clear();
    let last = import(&seeded.tags);
    let uploads = far.count(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/"));
    let (repo, tag, digest) = seeded.tags.last().unwrap();
    let imported = head_manifest(&far_registry, repo, tag).as_deref() == Some(digest.as_str());
    for (what, run) in [
        ("unchanged export", &unchanged),
        ("import of 59", &first),
        ("import of 60", &last),
    ] {
        if !run.ok() {
            problems.push(format!("{what} failed:\n{}", run.output));
        }
    }

    let (our_secs, their_secs) = (secs(&ours), secs(&theirs));
    let ratio = median(&our_secs)
        .zip(median(&their_secs))
        .map(|(a, b)| a / b);
    let title = format!("10a. export of {ntags} tags into an OCI layout");
    let bytes_title = "10a. bytes on disk of the export".to_string();
    let rerun_title = "10b. unchanged export".to_string();
    let import_title = "10c. import into a registry lacking one image".to_string();
    let skopeo_name = format!(
        "skopeo sync --dest dir ({})",
        version.trim_start_matches("skopeo ")
    );
    let rows = vec![
        Row {
            scenario: &title,
            tool: "regmirror --once",
            median: format!("{} wall", fmt_median_secs(&our_secs)),
            rounds: fmt_list(&our_secs, fmt_secs),
            ratio: ratio.map_or("–".into(), |r| format!("{r:.2} × skopeo")),
            target: "≤ 0.5 × skopeo",
            met: Some(ratio.is_some_and(|r| r <= 0.5) && problems.is_empty()),
        },
        Row {
            scenario: &title,
            tool: &skopeo_name,
            median: format!("{} wall", fmt_median_secs(&their_secs)),
            rounds: fmt_list(&their_secs, fmt_secs),
            ratio: "1".into(),
            target: "",
            met: None,
        },
        Row {
            scenario: &bytes_title,
            tool: "regmirror --once",
            median: fmt_bytes(our_bytes),
            rounds: format!(
                "unique bytes of the images: {}; skopeo's: {}",
                fmt_bytes(seeded.unique_bytes),
                fmt_bytes(their_bytes)
            ),
            ratio: format!(
                "{:.3} × unique",
                our_bytes as f64 / seeded.unique_bytes as f64
            ),
            target: "≈ the unique bytes",
            met: Some(
                our_bytes >= seeded.unique_bytes && our_bytes < seeded.unique_bytes + 64 * 1024,
            ),
        },
        Row {
            scenario: &rerun_title,
            tool: "regmirror --once",
            median: format!(
                "{rerun_pulls} pulls, layout {}",
                if untouched { "unchanged" } else { "changed" }
            ),
            rounds: format!("{:.2} s", unchanged.took.as_secs_f64()),
            ratio: "–".into(),
            target: "0 pulls, nothing written",
            met: Some(rerun_pulls == 0 && untouched && unchanged.ok()),
        },
        Row {
            scenario: &import_title,
            tool: "regmirror --once",
            median: format!("{uploads} blob uploads"),
            rounds: format!(
                "the image lacked {} blobs; {:.2} s",
                seeded.last_blobs,
                last.took.as_secs_f64()
            ),
            ratio: "–".into(),
            target: "only that image's blobs",
            met: Some(uploads == seeded.last_blobs && imported && last.ok()),
        },
    ];
    let mut section = format!(
        "## 10. Across an air gap: {ntags} two-platform tags through an OCI image layout\n\n{}\n",
        render_rows(&rows)
    );
    writeln!(
        section,
        "regmirror writes one layout (`target = \"oci:DIR\"`), every blob once; `skopeo sync --dest dir` (this skopeo has no `--dest oci`) writes a directory per tag, every blob again. \
         Bytes on disk exclude regmirror's own `.regmirror/` (its lock). Sizes: {} repositories × {TAGS} tags, {LAYERS} layers of {} per platform.",
        settings.repos,
        fmt_bytes(settings.layer_size as u64)
    )
    .unwrap();
    if settings.quick {
        section.push_str("(BENCH_QUICK: reduced sizes, not the issue's scenario.)\n");
    }
    for problem in &problems {
        writeln!(section, "\nProblem: {problem}").unwrap();
    }
    publish(&section, &rows);
    assert!(problems.is_empty(), "{problems:?}");
}
