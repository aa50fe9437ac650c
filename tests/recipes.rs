//! Every recipe that starts regmirror, run the way its scheduler would run it, against
//! registries on loopback. The command and environment come from the recipe files themselves:
//! a Kubernetes container's `args` on the image's `ENTRYPOINT` (from the Dockerfile), with its
//! Secret as environment; the ECS task definition's `Command` and `Environment`; CodeBuild's
//! buildspec command in a shell with the project's variables; the GitHub Actions step's script
//! with its `env`; the systemd unit's `ExecStart`. So a flag, variable or subcommand renamed in
//! the CLI, or a recipe that drifts from it, fails here. Only what names the outside world is
//! replaced: the ECR target by a local registry, AWS by moto, GitHub's expressions by test
//! values, the container's mount paths by directories of the sandbox.
//!
//! The Indexed CronJob's pods are started with `JOB_COMPLETION_INDEX` 0..N-1, as Kubernetes
//! starts them, and must split one list with no overlap and no gap.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::cli::sandboxed;
use harness::moto::{Moto, REGION};
use harness::*;
use regmirror::shard::Shard;
use serde_yaml_ng::Value;

const PATIENCE: Duration = Duration::from_secs(30);

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(value: &Value, what: &str) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("{what}: expected a string, found {other:?}"),
    }
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items.iter().map(|v| text(v, what)).collect(),
        other => panic!("{what}: expected a list, found {other:?}"),
    }
}

/// What a recipe starts: a program (the image's or the unit's path to regmirror) and its
/// arguments, and the environment it sets.
#[derive(Debug)]
struct Invocation {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl Invocation {
    /// The real binary in place of the recipe's path to it, in the sandbox's clean
    /// environment, with the recipe's arguments and variables.
    fn command(&self, sandbox: &Sandbox) -> Command {
        let program = Path::new(&self.argv[0]);
        assert_eq!(
            program.file_name().and_then(|n| n.to_str()),
            Some("regmirror"),
            "the recipe starts {:?}, not regmirror",
            self.argv[0]
        );
        let mut command = sandboxed(
            Command::new(env!("CARGO_BIN_EXE_regmirror")),
            sandbox.path(),
        );
        command.args(&self.argv[1..]).envs(self.env.iter().cloned());
        command
    }

    /// The argument after `flag`.
    fn value_of(&self, flag: &str) -> &str {
        let at = self.argv.iter().position(|a| a == flag);
        at.and_then(|i| self.argv.get(i + 1))
            .unwrap_or_else(|| panic!("{flag} is not among {:?}", self.argv))
    }

    /// Paths under `container` (a mount path, an install path) rewritten to `host`.
    fn mapped(mut self, container: &str, host: &Path) -> Invocation {
        let map = |s: &mut String| {
            if let Some(rest) = s.strip_prefix(container) {
                *s = format!("{}{rest}", host.display());
            }
        };
        self.argv[1..].iter_mut().for_each(map);
        self.env.iter_mut().for_each(|(_, v)| map(v));
        self
    }
}

/// The image's `ENTRYPOINT` and `CMD` (exec form) in the Dockerfile's last stage.
fn image_entrypoint_and_cmd() -> (Vec<String>, Vec<String>) {
    let dockerfile = read("Dockerfile");
    let exec_form = |instruction: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("{instruction} ")))
            .unwrap_or_else(|| panic!("Dockerfile: no {instruction}"));
        serde_json::from_str(line[instruction.len()..].trim())
            .unwrap_or_else(|e| panic!("Dockerfile: {instruction} is not in exec form: {e}"))
    };
    (exec_form("ENTRYPOINT"), exec_form("CMD"))
}

/// The variables of the Secret regmirror-credentials, from the example it is made from.
fn example_secret() -> Vec<(String, String)> {
    read("deploy/kubernetes/base/credentials.env.example")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.split_once('=').expect("NAME=value");
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// The pod spec of a Deployment or a CronJob manifest.
fn pod_spec(manifest: &Value) -> &Value {
    match manifest["kind"].as_str() {
        Some("Deployment") => &manifest["spec"]["template"]["spec"],
        Some("CronJob") => &manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        other => panic!("no pod spec in a {other:?}"),
    }
}

/// The regmirror container of a Kubernetes manifest as the kubelet starts it: its `command`,
/// or the image's ENTRYPOINT, then `args` (the image's CMD when neither is given); `env`
/// values, and the Secret's keys for `envFrom`; mount paths mapped into the sandbox.
fn kubernetes_container(manifest: &str, sandbox: &Sandbox) -> Invocation {
    let manifest = yaml(manifest);
    let container = &pod_spec(&manifest)["containers"][0];
    let (entrypoint, cmd) = image_entrypoint_and_cmd();
    let command = strings(&container["command"], "command");
    let args = strings(&container["args"], "args");
    let argv = match (command.is_empty(), args.is_empty()) {
        (true, true) => [entrypoint, cmd].concat(),
        (true, false) => [entrypoint, args].concat(),
        (false, _) => [command, args].concat(),
    };
    let mut env: Vec<(String, String)> = match &container["env"] {
        Value::Null => Vec::new(),
        list => list
            .as_sequence()
            .expect("env is a list")
            .iter()
            .map(|e| (text(&e["name"], "env name"), text(&e["value"], "env value")))
            .collect(),
    };
    if let Some(sources) = container["envFrom"].as_sequence() {
        for source in sources {
            assert_eq!(
                source["secretRef"]["name"].as_str(),
                Some("regmirror-credentials"),
                "{source:?}"
            );
            env.extend(example_secret());
        }
    }
    let mut invocation = Invocation { argv, env };
    for mount in container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let path = text(&mount["mountPath"], "mountPath");
        let host = sandbox.path().join(path.trim_start_matches('/'));
        invocation = invocation.mapped(&path, &host);
    }
    invocation
}

fn seed(registry: &Registry, names: &[String]) {
    for name in names {
        Image::single(Flavor::Oci, 1, 1024).push(registry, name, "1");
    }
}

fn images_toml(source: &Registry, names: &[String]) -> String {
    let list: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}/{n}:1\"", source.host()))
        .collect();
    format!("images = [{}]\n", list.join(", "))
}

fn mirrored(target: &Registry, names: &[String]) -> BTreeSet<String> {
    names
        .iter()
        .filter(|n| head_manifest(target, &format!("mirror/{n}"), "1").is_some())
        .cloned()
        .collect()
}

/// The number after `mirrored ` in the summary line.
fn mirrored_count(run: &Run) -> usize {
    let line = run.stdout.lines().find(|l| l.starts_with("mirrored "));
    line.and_then(|l| l.strip_prefix("mirrored "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line\n{}", run.output()))
}

/// Twelve or more image names of which every one of `count` shards gets at least one. The split
/// hashes each target reference, which holds the target's random port, so twelve fixed names
/// leave a shard empty about one run in forty.
fn names_in_every_shard(target: &Registry, count: u32) -> Vec<String> {
    let shards: Vec<Shard> = (1..=count).map(|index| Shard { index, count }).collect();
    let mut names = Vec::new();
    let mut filled = vec![false; shards.len()];
    for i in 0.. {
        if names.len() >= 12 && filled.iter().all(|f| *f) {
            break;
        }
        let name = format!("img{i}");
        let reference = format!("{}/mirror/{name}:1", target.host());
        for (shard, filled) in shards.iter().zip(&mut filled) {
            *filled |= shard.includes(&reference);
        }
        names.push(name);
    }
    names
}

#[test]
fn the_indexed_cronjob_splits_one_list_between_its_pods_with_no_overlap_and_no_gap() {
    const MANIFEST: &str = "deploy/kubernetes/shards/cronjob.yaml";
    let manifest = yaml(MANIFEST);
    let job = &manifest["spec"]["jobTemplate"]["spec"];
    assert_eq!(
        job["completionMode"].as_str(),
        Some("Indexed"),
        "{MANIFEST}"
    );
    let completions = job["completions"].as_u64().expect("completions");
    let sandbox = Sandbox::new();
    let pod = kubernetes_container(MANIFEST, &sandbox);
    assert_eq!(
        pod.value_of("--shard-index-env"),
        "JOB_COMPLETION_INDEX",
        "{MANIFEST}: the index Kubernetes sets"
    );
    assert_eq!(
        pod.value_of("--shards"),
        completions.to_string(),
        "{MANIFEST}: --shards must equal completions, or some shard never runs"
    );

    let source = Registry::start();
    let target = Registry::start();
    let names = names_in_every_shard(&target, completions as u32);
    seed(&source, &names);
    let config = pod.value_of("--config").to_string();
    std::fs::create_dir_all(Path::new(&config).parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "{}[defaults]\ntarget = \"{}/mirror\"\n",
            images_toml(&source, &names),
            target.host()
        ),
    )
    .unwrap();

    let mut done = BTreeSet::new();
    for index in 0..completions {
        let run = pod
            .command(&sandbox)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .run();
        // Nothing this pod was given was there already: no pod before it had it.
        run.assert_success().assert_summary("unchanged 0, failed 0");
        let now = mirrored(&target, &names);
        let share: Vec<_> = now.difference(&done).cloned().collect();
        assert!(
            !share.is_empty() && share.len() == mirrored_count(&run),
            "pod {index}: {share:?} newly in the target (before: {done:?})\n{}",
            run.output()
        );
        done = now;
    }
    assert_eq!(done.len(), names.len(), "images no pod mirrored");

    // A pod past the last, as a Job whose completions outgrew --shards would start, is refused.
    let run = pod
        .command(&sandbox)
        .env("JOB_COMPLETION_INDEX", completions.to_string())
        .run();
    run.assert_code(2);
    assert!(run.stderr.contains("out of range"), "{}", run.output());
}

/// Starts a daemon recipe, checks the endpoints its probes and scrapers use, lets it mirror,
/// and stops it as Kubernetes and systemd do (SIGTERM, exit 0).
fn run_daemon(name: &str, invocation: &Invocation, sandbox: &Sandbox, paths: &[&str]) {
    let source = Registry::start();
    let target = Registry::start();
    let names = vec!["daemon".to_string()];
    seed(&source, &names);
    let config = invocation.value_of("--config");
    std::fs::create_dir_all(Path::new(config).parent().unwrap()).unwrap();
    std::fs::write(
        config,
        format!(
            "{}[defaults]\ntarget = \"{}/mirror\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
            images_toml(&source, &names),
            target.host()
        ),
    )
    .unwrap();
    let mut daemon = invocation.command(sandbox).start();
    let base = format!("http://{}", daemon.http_address(PATIENCE));
    let client = reqwest::blocking::Client::new();
    for path in paths {
        let answer = client.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(answer.status(), 200, "{name}: GET {path}");
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while mirrored(&target, &names).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: nothing mirrored\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.terminate();
    let run = daemon.wait(PATIENCE);
    run.assert_success();
}

#[test]
fn the_daemon_recipes_start_answer_their_probes_and_stop_cleanly() {
    const DEPLOYMENT: &str = "deploy/kubernetes/daemon/deployment.yaml";
    let manifest = yaml(DEPLOYMENT);
    let container = &pod_spec(&manifest)["containers"][0];
    let annotations = &manifest["spec"]["template"]["metadata"]["annotations"];
    let paths = [
        text(&container["livenessProbe"]["httpGet"]["path"], "liveness"),
        text(&container["readinessProbe"]["httpGet"]["path"], "readiness"),
        text(&annotations["prometheus.io/path"], "scrape path"),
    ];
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let sandbox = Sandbox::new();
    let pod = kubernetes_container(DEPLOYMENT, &sandbox);
    assert!(!pod.argv.contains(&"--once".to_string()), "{:?}", pod.argv);
    run_daemon(DEPLOYMENT, &pod, &sandbox, &paths);

    let unit = read("systemd/regmirror.service");
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let sandbox = Sandbox::new();
    let service = Invocation {
        argv: exec_start.split_whitespace().map(String::from).collect(),
        env: Vec::new(),
    }
    .mapped("/etc/regmirror", &sandbox.path().join("etc/regmirror"));
    run_daemon(
        "systemd/regmirror.service",
        &service,
        &sandbox,
        &["/healthz"],
    );
}

#[test]
fn the_once_cronjob_runs_one_pass_and_the_shipped_configs_pass_check_with_the_example_secret() {
    const CRONJOB: &str = "deploy/kubernetes/cronjob/cronjob.yaml";
    let source = Registry::start();
    let target = Registry::start();
    let names = vec!["a".to_string(), "b".to_string()];
    seed(&source, &names);
    let sandbox = Sandbox::new();
    let pod = kubernetes_container(CRONJOB, &sandbox);
    let config = pod.value_of("--config");
    std::fs::create_dir_all(Path::new(config).parent().unwrap()).unwrap();
    let toml = images_toml(&source, &names);
    let target_toml = format!("[defaults]\ntarget = \"{}/mirror\"\n", target.host());
    std::fs::write(config, format!("{toml}{target_toml}")).unwrap();
    pod.command(&sandbox)
        .run()
        .assert_success()
        .assert_summary("mirrored 2, unchanged 0, failed 0");
    assert_eq!(mirrored(&target, &names).len(), 2);

    // The ConfigMaps' mirrors.toml, as the Deployment mounts them, with the example Secret's
    // variables: every ${VAR} they use is one the Secret has.
    let sandbox = Sandbox::new();
    let daemon = kubernetes_container("deploy/kubernetes/daemon/deployment.yaml", &sandbox);
    let config = daemon.value_of("--config");
    std::fs::create_dir_all(Path::new(config).parent().unwrap()).unwrap();
    for shipped in [
        "deploy/kubernetes/base/mirrors.toml",
        "deploy/kubernetes/eks/mirrors.toml",
    ] {
        std::fs::write(config, read(shipped)).unwrap();
        let run = daemon.command(&sandbox).arg("check").run();
        assert_eq!(run.code, Some(0), "{shipped}\n{}", run.output());
        // Without the Secret the same config is refused, naming the variable.
        let mut bare = daemon.command(&sandbox);
        for (name, _) in example_secret() {
            bare.env_remove(name);
        }
        let run = bare.arg("check").run();
        run.assert_code(2);
        let named = example_secret()
            .into_iter()
            .any(|(name, _)| run.stderr.contains(&format!("{name} is not set")));
        assert!(named, "{}", run.output());
    }
}

/// A CloudFormation value: a string, or `!Ref` to a parameter with a default.
fn cloudformation_value(template: &Value, value: &Value) -> String {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            let parameter = tagged.value.as_str().expect("!Ref names a parameter");
            text(
                &template["Parameters"][parameter]["Default"],
                &format!("default of {parameter}"),
            )
        }
        other => text(other, "a CloudFormation value"),
    }
}

/// `Name`/`Value` pairs; values that name AWS resources (`cloud`) replaced by local ones.
fn cloudformation_env(
    template: &Value,
    pairs: &Value,
    cloud: &BTreeMap<&str, String>,
) -> Vec<(String, String)> {
    let pairs = pairs.as_sequence().expect("a list of Name/Value");
    pairs
        .iter()
        .map(|pair| {
            let name = text(&pair["Name"], "Name");
            let value = match cloud.get(name.as_str()) {
                Some(local) => local.clone(),
                None => cloudformation_value(template, &pair["Value"]),
            };
            (name, value)
        })
        .collect()
}

#[test]
fn the_aws_recipes_run_their_commands_against_moto_and_a_local_target() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let names = vec!["x".to_string(), "y".to_string()];
    seed(&source, &names);
    let cloud = BTreeMap::from([
        ("REGMIRROR_TARGET", format!("{}/mirror", target.host())),
        ("AWS_REGION", REGION.to_string()),
    ]);

    // ECS: the image's ENTRYPOINT with the task definition's Command and Environment.
    let ecs = yaml("deploy/ecs-scheduled-task.yaml");
    let definition = &ecs["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    let (entrypoint, cmd) = image_entrypoint_and_cmd();
    let command = match &definition["Command"] {
        Value::Null => cmd,
        list => strings(list, "Command"),
    };
    let env = cloudformation_env(&ecs, &definition["Environment"], &cloud);
    let parameter = &env
        .iter()
        .find(|(name, _)| name == "REGMIRROR_SSM_PARAMETER")
        .expect("the task sets REGMIRROR_SSM_PARAMETER")
        .1;
    let s = source.host();
    moto.put_parameter(parameter, "StringList", &format!("{s}/x:1,{s}/y:1"));
    let task = Invocation {
        argv: [entrypoint, command].concat(),
        env,
    };
    let sandbox = Sandbox::new();
    task.command(&sandbox)
        .envs(moto.env())
        .run()
        .assert_success()
        .assert_summary("mirrored 2, unchanged 0, failed 0");

    // CodeBuild: the buildspec's commands in a shell, with the project's variables.
    let codebuild = yaml("deploy/codebuild.yaml");
    let project = &codebuild["Resources"]["Project"]["Properties"];
    let env = cloudformation_env(
        &codebuild,
        &project["Environment"]["EnvironmentVariables"],
        &cloud,
    );
    let buildspec = yaml("deploy/buildspec.yml");
    let path = path_with_regmirror();
    for line in strings(&buildspec["phases"]["build"]["commands"], "commands") {
        let run = sandboxed(Command::new("sh"), sandbox.path())
            .args(["-c", &line])
            .env("PATH", &path)
            .envs(moto.env())
            .envs(env.iter().cloned())
            .run();
        run.assert_success()
            .assert_summary("mirrored 0, unchanged 2, failed 0");
    }
}

/// `PATH` with the test's binary first, as a recipe's shell finds `regmirror` by name.
fn path_with_regmirror() -> String {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_regmirror"));
    let dir = bin.parent().expect("the binary's directory");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `${{ expr }}` values of a workflow's `env`, as GitHub would fill them in for this test.
fn github_expression(value: &str, expressions: &BTreeMap<&str, &str>) -> String {
    match value.strip_prefix("${{").and_then(|v| v.strip_suffix("}}")) {
        Some(expression) => expressions
            .get(expression.trim())
            .unwrap_or_else(|| panic!("no test value for the expression {value}"))
            .to_string(),
        None => value.to_string(),
    }
}

#[test]
fn the_github_workflow_runs_regmirror_and_ends_with_its_exit_code() {
    const WORKFLOW: &str = "deploy/github-actions/mirror.yml";
    let workflow = yaml(WORKFLOW);
    let job = &workflow["jobs"]["mirror"];
    let step = job["steps"]
        .as_sequence()
        .expect("steps")
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("regmirror ")))
        .expect("a step that runs regmirror");
    let script = text(&step["run"], "run");
    assert!(
        !script.contains("${{"),
        "{WORKFLOW}: the script takes GitHub's values through env, never ${{{{ }}}} in the shell"
    );
    // GHCR through GITHUB_TOKEN: the target registry here wants those credentials.
    let (actor, token) = ("octocat", "ghs_0123456789abcdef");
    let expressions = BTreeMap::from([
        ("github.actor", actor),
        ("secrets.GITHUB_TOKEN", token),
        ("vars.DOCKERHUB_USERNAME", ""),
        ("secrets.DOCKERHUB_TOKEN", ""),
    ]);
    let mut env = Vec::new();
    for scope in [&workflow["env"], &job["env"], &step["env"]] {
        for (name, value) in scope.as_mapping().into_iter().flatten() {
            let value = github_expression(&text(value, "env value"), &expressions);
            env.push((text(name, "env name"), value));
        }
    }
    let source = Registry::start();
    let target = Registry::start_with(RegistryOptions::htpasswd(actor, token));
    let names = vec!["gha".to_string()];
    seed(&source, &names);
    let credentials = format!(
        "[registries.\"{}\"]\nusername = \"${{GHCR_USERNAME}}\"\npassword = \"${{GHCR_TOKEN}}\"\n",
        target.host()
    );
    let good = format!(
        "[defaults]\ntarget = \"{}/mirror\"\n{credentials}",
        target.host()
    );
    let missing = format!("\"{}/ghost:1\"", source.host());
    let cases = [
        (images_toml(&source, &names) + &good, 0, "mirrored 1"),
        (format!("images = [{missing}]\n{good}"), 1, "FAILED"),
        (format!("images = [{missing}]\n[defaultz]\n"), 2, ""),
    ];
    let path = path_with_regmirror();
    for (config, code, report) in cases {
        // The checkout: mirrors.toml at its root, the working directory of every step.
        let sandbox = Sandbox::new();
        sandbox.write_config(&config);
        let summary = sandbox.path().join("summary.md");
        // GitHub's default shell for `run` on Linux.
        let run = sandboxed(Command::new("bash"), sandbox.path())
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
            .env("PATH", &path)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .envs(env.iter().cloned())
            .run();
        run.assert_code(code);
        let summary = std::fs::read_to_string(&summary).unwrap_or_default();
        assert!(
            summary.contains(&format!("exit code {code}")) && summary.contains(report),
            "the run's summary page\n{summary}\n{}",
            run.output()
        );
    }
    assert_eq!(mirrored(&target, &names).len(), 1);
}

/// Writes `files` the way the kubelet updates a ConfigMap volume: into a new hidden
/// directory, then `..data` switched to it by renaming a new symlink over it, the visible
/// names being symlinks through `..data` (created on the first update).
fn kubelet_configmap_update(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    let version = format!("..2026_01_01_00_00_0{generation}.{generation}");
    std::fs::create_dir_all(dir.join(&version)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&version).join(name), content).unwrap();
    }
    symlink(&version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
    if generation > 1 {
        let old = format!("..2026_01_01_00_00_0{}.{}", generation - 1, generation - 1);
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[test]
fn a_configmap_update_reaches_the_daemon_without_a_restart() {
    const DEPLOYMENT: &str = "deploy/kubernetes/daemon/deployment.yaml";
    let source = Registry::start();
    let target = Registry::start();
    let names = vec!["first".to_string(), "second".to_string()];
    seed(&source, &names);
    let sandbox = Sandbox::new();
    let pod = kubernetes_container(DEPLOYMENT, &sandbox);
    let config = PathBuf::from(pod.value_of("--config"));
    let dir = config.parent().unwrap();
    let file = config.file_name().unwrap().to_str().unwrap();
    let toml = |names: &[String]| {
        format!(
            "{}[defaults]\ntarget = \"{}/mirror\"\n",
            images_toml(&source, names),
            target.host()
        )
    };
    kubelet_configmap_update(dir, 1, &[(file, &toml(&names[..1]))]);
    let mut daemon = pod.command(&sandbox).start();
    let deadline = std::time::Instant::now() + PATIENCE;
    let until = |count: usize| {
        while mirrored(&target, &names).len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{count} images not mirrored\n{}",
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until(1);
    kubelet_configmap_update(dir, 2, &[(file, &toml(&names))]);
    until(2);
    assert!(daemon.is_running(), "{}", daemon.stderr());
}
