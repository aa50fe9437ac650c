//! Every config the README says is refused, through the real binary: `regmirror check` and
//! `regmirror --once` exit 2, print nothing on stdout, and say on stderr what is wrong and where
//! (`path:line:column`, the line itself, the offending text underlined). A refused config sends
//! no request at all. Usage errors exit 2 too; a valid config passes `check` with its plan.

mod harness;

use harness::*;

/// A variable no test environment sets: the harness clears every `REGMIRROR_*` variable.
const UNSET_VAR: &str = "REGMIRROR_TEST_NEVER_SET";

/// One refused config.
struct Case {
    name: &'static str,
    toml: String,
    /// Where the error points: `(line, column, underlined text)`; `None` for an error about the
    /// file as a whole (`path: message`). The underlined text is what the README calls the
    /// offending text; it must sit at that line and column of `toml`.
    at: Option<(usize, usize, &'static str)>,
    /// Substrings stderr must contain besides the place: the key, reference or variable.
    expect: &'static [&'static str],
    /// The line as quoted and the text underlined, when they differ from the file's: a
    /// secret's value is never shown.
    shown: Option<(&'static str, &'static str)>,
}

fn case(
    name: &'static str,
    toml: &str,
    at: Option<(usize, usize, &'static str)>,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        toml: toml.to_owned(),
        at,
        expect,
        shown: None,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "TOML syntax error: unterminated string",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\nconcurrency = 4\n",
            Some((3, 17, "")),
            &[],
        ),
        case(
            "TOML syntax error: key without a value",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nconcurrency 4\n",
            Some((4, 13, "4")),
            &[],
        ),
        case(
            "TOML syntax error: table defined twice",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[defaults]\nconcurrency = 4\n",
            Some((4, 2, "defaults")),
            &["duplicate"],
        ),
        case(
            "unknown key: misspelt concurrensy in [defaults]",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nconcurrensy = 4\n",
            Some((4, 1, "concurrensy")),
            &["unknown key `concurrensy`"],
        ),
        case(
            "unknown key: top-level table [mirrors]",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[mirrors]\nsource = \"x\"\n",
            Some((4, 2, "mirrors")),
            &["unknown key `mirrors`"],
        ),
        case(
            "unknown key: top-level key image",
            "images = [\"nginx:1\"]\nimage = [\"alpine:3\"]\n[defaults]\ntarget = \"r.io/m\"\n",
            Some((2, 1, "image")),
            &["unknown key `image`"],
        ),
        case(
            "unknown key: tag in [[mirror]]",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ntag = [\"v1\"]\n",
            Some((5, 1, "tag")),
            &["unknown key `tag`"],
        ),
        case(
            "unknown key: user in [registries.\"host\"]",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"r.io\"]\nuser = \"u\"\n",
            Some((5, 1, "user")),
            &["unknown key `user`"],
        ),
        case(
            "invalid reference in images",
            "images = [\"alpine:3\", \"Nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n",
            Some((1, 23, "\"Nginx:1\"")),
            &["invalid image reference", "Nginx:1"],
        ),
        case(
            "invalid reference: [[mirror]] source with tags names a tag",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool:v1\"\ntags = [\"v2\"]\n",
            Some((4, 10, "\"ghcr.io/org/tool:v1\"")),
            &["invalid image reference", "ghcr.io/org/tool:v1"],
        ),
        case(
            "invalid reference: a bad tag in [[mirror]] tags",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ntags = [\"v1\", \"bad tag\"]\n",
            Some((5, 15, "\"bad tag\"")),
            &["invalid image reference", "bad tag"],
        ),
        case(
            "empty [[mirror]] tags",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ntags = []\n",
            Some((4, 10, "\"ghcr.io/org/tool\"")),
            &["mirror.tags is empty"],
        ),
        case(
            "no target: images without defaults.target",
            "images = [\"nginx:1\"]\n",
            Some((1, 11, "\"nginx:1\"")),
            &["no target for docker.io/library/nginx:1"],
        ),
        case(
            "no target: [[mirror]] without target nor defaults.target",
            "[[mirror]]\nsource = \"ghcr.io/org/tool\"\ntags = [\"v1\"]\n",
            Some((3, 9, "\"v1\"")),
            &["no target for ghcr.io/org/tool:v1"],
        ),
        case(
            "two sources on one target: host dropped from quay.io/nginx",
            "images = [\n  \"nginx:1\",\n  \"quay.io/nginx:1\",\n]\n[defaults]\ntarget = \"r.io/m\"\n",
            Some((3, 3, "\"quay.io/nginx:1\"")),
            &[
                "quay.io/nginx:1",
                "docker.io/library/nginx:1 (line 2)",
                "r.io/m/nginx:1",
            ],
        ),
        case(
            "two sources on one target: [[mirror]] target collides with images",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n\n[[mirror]]\nsource = \"ghcr.io/org/nginx\"\ntags = [\"1\"]\ntarget = \"r.io/m/nginx\"\n",
            Some((7, 9, "\"1\"")),
            &[
                "ghcr.io/org/nginx:1",
                "docker.io/library/nginx:1 (line 1)",
                "r.io/m/nginx:1",
            ],
        ),
        case(
            "unset ${VAR} in a registry password",
            &format!(
                "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"r.io\"]\nusername = \"u\"\npassword = \"${{{UNSET_VAR}}}\"\n"
            ),
            Some((6, 12, "\"${REGMIRROR_TEST_NEVER_SET}\"")),
            &["password", "REGMIRROR_TEST_NEVER_SET is not set"],
        ),
        case(
            "unset ${VAR} in defaults.target",
            &format!("images = [\"nginx:1\"]\n[defaults]\ntarget = \"${{{UNSET_VAR}}}/m\"\n"),
            Some((3, 10, "\"${REGMIRROR_TEST_NEVER_SET}/m\"")),
            &["defaults.target", "REGMIRROR_TEST_NEVER_SET is not set"],
        ),
        case(
            "unterminated ${ in a password",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"r.io\"]\nusername = \"u\"\npassword = \"${TOKEN\"\n",
            Some((6, 12, "\"${TOKEN\"")),
            &["password", "without a closing"],
        ),
        case(
            "defaults.target without a host",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"mirror/x\"\n",
            Some((3, 10, "\"mirror/x\"")),
            &["invalid target \"mirror/x\"", "registry host"],
        ),
        case(
            "[[mirror]] target without a host",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ntags = [\"v1\"]\ntarget = \"tools/tool\"\n",
            Some((6, 10, "\"tools/tool\"")),
            &["invalid target \"tools/tool\"", "registry host"],
        ),
        case(
            "target with a tag",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m:tag\"\n",
            Some((3, 10, "\"r.io/m:tag\"")),
            &["invalid target \"r.io/m:tag\""],
        ),
        case(
            "concurrency 0",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nconcurrency = 0\n",
            Some((4, 15, "0")),
            &["defaults.concurrency must be between 1 and 64, not 0"],
        ),
        case(
            "concurrency 65",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nconcurrency = 65\n",
            Some((4, 15, "65")),
            &["defaults.concurrency must be between 1 and 64, not 65"],
        ),
        case(
            "concurrency as a string",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nconcurrency = \"4\"\n",
            Some((4, 15, "\"4\"")),
            &["invalid type"],
        ),
        case(
            "username without password",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"r.io\"]\nusername = \"u\"\n",
            Some((5, 12, "\"u\"")),
            &["registries.\"r.io\".username is set but registries.\"r.io\".password is not"],
        ),
        Case {
            shown: Some(("password = \"<redacted>\"", "\"<redacted>\"")),
            ..case(
                "password without username",
                "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"r.io\"]\npassword = \"p4ss\"\n",
                Some((5, 12, "\"p4ss\"")),
                &["registries.\"r.io\".password is set but registries.\"r.io\".username is not"],
            )
        },
        case(
            "missing ca_file",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"r.io\"]\nca_file = \"/nonexistent/regmirror-test/ca.pem\"\n",
            Some((5, 11, "\"/nonexistent/regmirror-test/ca.pem\"")),
            &["ca_file", "/nonexistent/regmirror-test/ca.pem"],
        ),
        case(
            "tag rules: an include that is not a regular expression",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ninclude = ['v1', '1.27.(']\n",
            Some((5, 18, "'1.27.('")),
            &["mirror.include", "\"1.27.(\" is not a regular expression"],
        ),
        case(
            "tag rules: an exclude that is not a regular expression",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ninclude = ['.*']\nexclude = ['*-rc']\n",
            Some((6, 12, "'*-rc'")),
            &["mirror.exclude", "is not a regular expression"],
        ),
        case(
            "tag rules: a semver range that is not one",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\nsemver = \">=1.27 <<2\"\n",
            Some((5, 10, "\">=1.27 <<2\"")),
            &["mirror.semver", "is not a version range"],
        ),
        case(
            "tag rules: latest = 0",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\nlatest = 0\n",
            Some((5, 10, "0")),
            &["mirror.latest must be at least 1, not 0"],
        ),
        case(
            "tag rules: exclude alone",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\nexclude = ['.*-rc.*']\n",
            Some((5, 11, "['.*-rc.*']")),
            &["mirror.exclude alone would select every other tag", "include = [\".*\"]"],
        ),
        case(
            "tag rules: an empty include",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ninclude = []\n",
            Some((5, 11, "[]")),
            &["mirror.include is empty"],
        ),
        case(
            "tag rules: a source that names a tag",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool:v1\"\nlatest = 3\n",
            Some((4, 10, "\"ghcr.io/org/tool:v1\"")),
            &["names a tag or digest, but tag rules select the tags of a repository"],
        ),
        case(
            "tag rules: a listed tag that exclude drops",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\ntags = [\"v1-rc\"]\ninclude = ['v.*']\nexclude = ['.*-rc']\n",
            Some((5, 9, "\"v1-rc\"")),
            &["tag \"v1-rc\" is listed in mirror.tags and dropped by mirror.exclude \".*-rc\""],
        ),
        case(
            "a [[mirror]] repository with neither tags nor rules",
            "[defaults]\ntarget = \"r.io/m\"\n[[mirror]]\nsource = \"ghcr.io/org/tool\"\n",
            Some((4, 10, "\"ghcr.io/org/tool\"")),
            &["is a repository: say which tags", "include = [\".*\"]` mirrors every tag"],
        ),
        case(
            "tag rules without a target",
            "[[mirror]]\nsource = \"ghcr.io/org/tool\"\ninclude = ['.*']\n",
            Some((2, 10, "\"ghcr.io/org/tool\"")),
            &["no target for ghcr.io/org/tool"],
        ),
        case(
            "layout: an unknown value",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nlayout = \"flat\"\n",
            Some((4, 10, "\"flat\"")),
            &["defaults.layout is \"flat\"; expected \"path\" (the default) or \"registry\""],
        ),
        case(
            "layout: mirror_prefix without the registry layout",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"docker.io\"]\nmirror_prefix = \"hub\"\n",
            Some((5, 17, "\"hub\"")),
            &["mirror_prefix names the registry's path in the registry layout"],
        ),
        case(
            "layout: a mirror_prefix that is not a path",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nlayout = \"registry\"\n[registries.\"docker.io\"]\nmirror_prefix = \"Docker Hub\"\n",
            Some((6, 17, "\"Docker Hub\"")),
            &["is not a repository path"],
        ),
        case(
            "endpoint: not a URL",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"docker.io\"]\nendpoint = \"proxy.example.com/hub\"\n",
            Some((5, 12, "\"proxy.example.com/hub\"")),
            &["registries.\"docker.io\".endpoint \"proxy.example.com/hub\": not a URL"],
        ),
        case(
            "endpoint: plain HTTP without insecure",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"docker.io\"]\nendpoint = \"http://proxy.example.com/hub\"\n",
            Some((5, 12, "\"http://proxy.example.com/hub\"")),
            &["is plain HTTP: set insecure = true for this registry to allow it"],
        ),
        case(
            "endpoint: HTTPS beside insecure = true",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"docker.io\"]\ninsecure = true\nendpoint = \"https://proxy.example.com\"\n",
            Some((6, 12, "\"https://proxy.example.com\"")),
            &["is HTTPS, but insecure = true says plain HTTP"],
        ),
        Case {
            shown: Some((
                "endpoint = \"https://<redacted>@proxy.example.com\"",
                "\"https://<redacted>@proxy.example.com\"",
            )),
            ..case(
                "endpoint: credentials in the URL",
                "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"docker.io\"]\nendpoint = \"https://me:pw@proxy.example.com\"\n",
                Some((5, 12, "\"https://me:pw@proxy.example.com\"")),
                &["holds credentials: give them as username and password"],
            )
        },
        case(
            "endpoint_gets_docker_login without an endpoint",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"docker.io\"]\nendpoint_gets_docker_login = true\n",
            Some((5, 30, "true")),
            &["registries.\"docker.io\".endpoint_gets_docker_login is set but registries.\"docker.io\".endpoint is not"],
        ),
        case(
            "endpoint_gets_docker_login beside username and password",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n[registries.\"docker.io\"]\nendpoint = \"https://proxy.example.com\"\nusername = \"u\"\npassword = \"p\"\nendpoint_gets_docker_login = true\n",
            Some((8, 30, "true")),
            &["this section's username and password are what the endpoint gets"],
        ),
        case(
            "targets: both target and targets",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\ntargets = [\"s.io/m\"]\n",
            Some((4, 11, "[\"s.io/m\"]")),
            &["defaults.target and defaults.targets are both set"],
        ),
        case(
            "targets: an empty list",
            "[[mirror]]\nsource = \"ghcr.io/org/tool\"\ntags = [\"v1\"]\ntargets = []\n",
            Some((4, 11, "[]")),
            &["mirror.targets is empty"],
        ),
        case(
            "targets: one listed twice",
            "images = [\"nginx:1\"]\n[defaults]\ntargets = [\"r.io/m\", \"s.io/m\", \"r.io/m/\"]\n",
            Some((3, 32, "\"r.io/m/\"")),
            &["defaults.targets lists r.io/m twice"],
        ),
        case(
            "platforms: not os/architecture",
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\nplatforms = [\"linux/amd64\", \"amd64\"]\n",
            Some((4, 29, "\"amd64\"")),
            &["defaults.platforms: \"amd64\" is not a platform"],
        ),
        case(
            "platforms: an empty list",
            "[[mirror]]\nsource = \"ghcr.io/org/tool:v1\"\ntarget = \"r.io/t\"\nplatforms = []\n",
            Some((4, 13, "[]")),
            &["mirror.platforms is empty"],
        ),
        case("nothing to mirror: empty file", "", None, &["nothing to mirror"]),
        case(
            "nothing to mirror: only [defaults]",
            "[defaults]\ntarget = \"r.io/m\"\n",
            None,
            &["nothing to mirror"],
        ),
        case(
            "nothing to mirror: empty images",
            "images = []\n[defaults]\ntarget = \"r.io/m\"\n",
            None,
            &["nothing to mirror"],
        ),
    ]
}

/// Checks that `run` refused `case` read from `shown_path` (the path as regmirror was given
/// it); returns what is wrong, if anything.
fn refusal_problems(case: &Case, shown_path: &str, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    if run.code != Some(2) {
        problems.push(format!("exit code {:?}, expected 2", run.code));
    }
    if !run.stdout.is_empty() {
        problems.push("stdout should be empty: nothing was attempted".to_owned());
    }
    match case.at {
        Some((line, column, underlined)) => {
            let place = format!("error: {shown_path}:{line}:{column}: ");
            if !run.stderr.contains(&place) {
                problems.push(format!("stderr does not contain `{place}`"));
            }
            problems.extend(underline_problems(
                &case.toml,
                &run.stderr,
                line,
                column,
                underlined,
                case.shown,
            ));
            if case.shown.is_some() && run.stderr.contains(underlined) {
                problems.push(format!("stderr shows the secret {underlined}"));
            }
        }
        None => {
            let whole = format!("error: {shown_path}: ");
            if !run.stderr.contains(&whole) {
                problems.push(format!("stderr does not contain `{whole}`"));
            }
        }
    }
    for needle in case.expect {
        if !run.stderr.contains(needle) {
            problems.push(format!("stderr does not contain `{needle}`"));
        }
    }
    problems
}

/// The quoted line must be `line` of `toml`, and the carets under it must start at `column`
/// and span `underlined` (at least one caret when `underlined` is empty: the end of a line).
fn underline_problems(
    toml: &str,
    stderr: &str,
    line: usize,
    column: usize,
    underlined: &str,
    shown: Option<(&str, &str)>,
) -> Vec<String> {
    let Some(line_text) = toml.lines().nth(line - 1) else {
        return vec![format!("the case itself is wrong: no line {line}")];
    };
    let at_column: String = line_text.chars().skip(column - 1).collect();
    if !at_column.starts_with(underlined) {
        return vec![format!(
            "the case itself is wrong: line {line} column {column} is {at_column:?}, not {underlined:?}"
        )];
    }
    let (line_text, underlined) = shown.unwrap_or((line_text, underlined));
    let quoted = format!("{line} | {line_text}");
    let lines: Vec<&str> = stderr.lines().collect();
    let Some(index) = lines.iter().position(|l| *l == quoted) else {
        return vec![format!("stderr does not quote the line as `{quoted}`")];
    };
    let gutter = " ".repeat(line.to_string().len());
    let carets = "^".repeat(underlined.chars().count().max(1));
    let expected = format!("{gutter} | {}{carets}", " ".repeat(column - 1));
    match lines.get(index + 1) {
        Some(under) if under.trim_end() == expected => Vec::new(),
        under => vec![format!(
            "the underline should be `{expected}`, is {under:?}"
        )],
    }
}

/// How a case is run: the arguments, and the path regmirror should show for the config.
#[derive(Clone, Copy)]
enum Invocation {
    /// `regmirror check --config <absolute path>`: the path is shown as given.
    CheckWithConfigFlag,
    /// `regmirror --once` with the default `./mirrors.toml`, shown as `mirrors.toml`.
    OnceWithDefaultPath,
    /// `regmirror` (the daemon) with `REGMIRROR_CONFIG=<absolute path>`: it never starts.
    DaemonWithEnvPath,
}

/// Runs every case of [`cases`] one way and fails listing every case that was not refused
/// as expected, each with its file and regmirror's output.
fn assert_every_case_refused(invocation: Invocation) {
    let mut failures = Vec::new();
    for case in cases() {
        let sandbox = Sandbox::new();
        let path = sandbox.write_config(&case.toml);
        let (run, shown_path) = match invocation {
            Invocation::CheckWithConfigFlag => (
                sandbox
                    .regmirror()
                    .arg("check")
                    .arg("--config")
                    .arg(&path)
                    .run(),
                path.display().to_string(),
            ),
            Invocation::OnceWithDefaultPath => (
                sandbox.regmirror().arg("--once").run(),
                "mirrors.toml".to_owned(),
            ),
            Invocation::DaemonWithEnvPath => (
                sandbox.regmirror().env("REGMIRROR_CONFIG", &path).run(),
                path.display().to_string(),
            ),
        };
        let problems = refusal_problems(&case, &shown_path, &run);
        if !problems.is_empty() {
            failures.push(format!(
                "case `{}`:\n  - {}\n--- mirrors.toml ---\n{}\n{}",
                case.name,
                problems.join("\n  - "),
                case.toml,
                run.output()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} refused configs were not refused as expected:\n\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n\n")
    );
}

#[test]
fn check_refuses_every_bad_config_naming_the_problem_and_its_place() {
    assert_every_case_refused(Invocation::CheckWithConfigFlag);
}

#[test]
fn once_refuses_every_bad_config_naming_the_problem_and_its_place() {
    assert_every_case_refused(Invocation::OnceWithDefaultPath);
}

#[test]
fn the_daemon_refuses_every_bad_config_at_start_with_exit_2() {
    assert_every_case_refused(Invocation::DaemonWithEnvPath);
}

fn assert_missing_file_named(run: &Run, path: &str) {
    run.assert_code(2);
    assert!(run.stdout.is_empty(), "{}", run.output());
    assert!(
        run.stderr
            .contains(&format!("cannot read config file {path}: no such file")),
        "the missing file should be named\n{}",
        run.output()
    );
}

#[test]
fn a_missing_config_file_is_named_whichever_way_it_was_chosen() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path().join("nowhere").join("mirrors.toml");
    let missing_shown = missing.display().to_string();

    for args in [&["check"][..], &["--once"][..], &[][..]] {
        let via_flag = sandbox
            .regmirror()
            .args(args)
            .arg("--config")
            .arg(&missing)
            .run();
        assert_missing_file_named(&via_flag, &missing_shown);

        let via_env = sandbox
            .regmirror()
            .args(args)
            .env("REGMIRROR_CONFIG", &missing)
            .run();
        assert_missing_file_named(&via_env, &missing_shown);

        // Neither: ./mirrors.toml, which the sandbox does not have.
        let default = sandbox.regmirror().args(args).run();
        assert_missing_file_named(&default, "mirrors.toml");
    }

    // --config wins over REGMIRROR_CONFIG, and REGMIRROR_CONFIG over ./mirrors.toml.
    let valid = sandbox.write_file(
        "elsewhere/valid.toml",
        "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n",
    );
    let flag_wins = sandbox
        .regmirror()
        .arg("check")
        .arg("--config")
        .arg(&missing)
        .env("REGMIRROR_CONFIG", &valid)
        .run();
    assert_missing_file_named(&flag_wins, &missing_shown);
    let env_used = sandbox
        .regmirror()
        .arg("check")
        .env("REGMIRROR_CONFIG", &valid)
        .run();
    env_used.assert_success();
    assert!(
        env_used
            .stdout
            .contains("docker.io/library/nginx:1 → r.io/m/nginx:1"),
        "{}",
        env_used.output()
    );
}

#[test]
fn check_on_a_valid_config_prints_every_source_and_target() {
    let sandbox = Sandbox::new();
    let path = sandbox.write_config(
        r#"images = [
  "nginx:stable",
  "library/alpine:3.19",
  "ghcr.io/org/app:v1",
  "127.0.0.1:5001/team/app:1.0",
  "nginx:stable",
]

[defaults]
target = "reg.example.com/mirror"
concurrency = 64

[registries."ghcr.io"]
username = "${GHCR_USER}"
password = "${GHCR_TOKEN}"

[[mirror]]
source = "ghcr.io/org/tool"
tags = ["v1.2.0", "v1.3.0"]
target = "registry.internal:5000/tools/tool"

[[mirror]]
source = "quay.io/prometheus/prometheus:v2.51.0"
"#,
    );
    let run = sandbox
        .regmirror()
        .arg("check")
        .env("GHCR_USER", "someone")
        .env("GHCR_TOKEN", "ghp-not-a-real-token-3b9e")
        .run();
    run.assert_success();
    let expected = [
        "docker.io/library/nginx:stable → reg.example.com/mirror/nginx:stable",
        "docker.io/library/alpine:3.19 → reg.example.com/mirror/library/alpine:3.19",
        "ghcr.io/org/app:v1 → reg.example.com/mirror/org/app:v1",
        "127.0.0.1:5001/team/app:1.0 → reg.example.com/mirror/team/app:1.0",
        "ghcr.io/org/tool:v1.2.0 → registry.internal:5000/tools/tool:v1.2.0",
        "ghcr.io/org/tool:v1.3.0 → registry.internal:5000/tools/tool:v1.3.0",
        "quay.io/prometheus/prometheus:v2.51.0 → reg.example.com/mirror/prometheus/prometheus:v2.51.0",
    ];
    let plan: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.contains(" → "))
        .map(str::trim)
        .collect();
    // In file order, and nginx:stable listed twice is one image.
    assert_eq!(plan, expected, "{}", run.output());
    assert!(
        run.stdout.starts_with("mirrors.toml: 7 images"),
        "{}",
        run.output()
    );
    assert!(!run.output().contains("ghp-not-a-real-token-3b9e"));
    // `check` with an explicit path names that path.
    let explicit = sandbox
        .regmirror()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env("GHCR_USER", "someone")
        .env("GHCR_TOKEN", "ghp-not-a-real-token-3b9e")
        .run();
    explicit.assert_success();
    assert!(
        explicit
            .stdout
            .starts_with(&format!("{}: 7 images", path.display())),
        "{}",
        explicit.output()
    );
}

#[test]
fn a_refused_config_sends_no_request_at_all() {
    let source_registry = Registry::start();
    let source = Proxy::start(source_registry.host());
    let target_registry = Registry::start();
    let target = Proxy::start(target_registry.host());
    Image::single(Flavor::Oci, 1, 1024).push(&source_registry, "team/app", "1.0");

    // The file is the same valid one each time, with one error appended after the image.
    let sandbox = Sandbox::new();
    let with_error = |broken: &str| {
        format!(
            "images = [\"{}/team/app:1.0\"]\n\n[defaults]\ntarget = \"{}/mirror\"\n{broken}",
            source.host(),
            target.host()
        )
    };
    sandbox.write_config(&with_error(""));
    // Control: without the error, a dry run does reach both registries through the proxies.
    sandbox
        .regmirror()
        .args(["--once", "--dry-run"])
        .run()
        .assert_success();
    assert!(
        !source.requests().is_empty(),
        "the control run reached the source"
    );
    assert!(
        !target.requests().is_empty(),
        "the control run reached the target"
    );

    let broken = [
        "concurrency = 0\n".to_owned(),
        "concurrensy = 4\n".to_owned(),
        format!(
            "[registries.\"{}\"]\nusername = \"u\"\npassword = \"${{{UNSET_VAR}}}\"\n",
            target.host()
        ),
        format!(
            "[[mirror]]\nsource = \"{}/other/app\"\ntags = [\"1.0\"]\ntarget = \"{}/mirror/team/app\"\n",
            source.host(),
            target.host()
        ),
        "[registries.\"r.io\"]\nca_file = \"/nonexistent/regmirror-test/ca.pem\"\n".to_owned(),
    ];
    for error in &broken {
        for args in [&["--once"][..], &["--dry-run"][..], &[][..]] {
            source.clear();
            target.clear();
            sandbox.write_config(&with_error(error));
            let run = sandbox.regmirror().args(args).run();
            run.assert_code(2);
            assert!(
                run.stderr.contains("error: mirrors.toml:"),
                "{error:?} {args:?}\n{}",
                run.output()
            );
            assert_eq!(
                source.requests(),
                Vec::<Logged>::new(),
                "{error:?} {args:?}: no request may reach the source"
            );
            assert_eq!(
                target.requests(),
                Vec::<Logged>::new(),
                "{error:?} {args:?}: no request may reach the target"
            );
        }
    }
}

#[test]
fn usage_errors_exit_2_naming_the_argument() {
    let sandbox = Sandbox::new();
    sandbox.write_config("images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n");
    let cases: &[(&[&str], &str)] = &[
        (&["--once", "--frobnicate"], "--frobnicate"),
        (&["--concurrensy", "4", "--once"], "--concurrensy"),
        (&["frobnicate"], "frobnicate"),
        (&["--once", "--log-format", "xml"], "xml"),
        (&["--once", "-v", "-q"], "cannot be used with"),
        (&["--once", "--config"], "--config"),
    ];
    let mut failures = Vec::new();
    for (args, named) in cases {
        let run = sandbox.regmirror().args(*args).run();
        if run.code != Some(2) || !run.stderr.contains(named) || !run.stdout.is_empty() {
            failures.push(format!(
                "regmirror {}: expected exit 2 and `{named}` on stderr\n{}",
                args.join(" "),
                run.output()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `--shards N` with `--shard-index-env VAR` (the 0-based Kubernetes form) beside `--shard I/N`:
/// every bad combination and every bad index exits 2 before anything is attempted, saying what
/// is wrong, whether it came as flags or as `REGMIRROR_*` variables.
#[test]
fn shard_usage_errors_exit_2_naming_what_is_wrong() {
    let sandbox = Sandbox::new();
    sandbox.write_config("images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n");
    const INDEX: &str = "JOB_COMPLETION_INDEX";
    let k8s = ["--shards", "3", "--shard-index-env", INDEX];
    // (arguments, environment, what stderr must say)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--once", "--shards", "3"], &[(INDEX, "0")], "--shard-index-env <VAR>"),
        (&["--once", "--shard-index-env", INDEX], &[(INDEX, "0")], "--shards <N>"),
        (&["--once", "--shards", "0", "--shard-index-env", INDEX], &[(INDEX, "0")], "'0' for '--shards <N>'"),
        (&["--once", "--shard", "1/3", "--shards", "3", "--shard-index-env", INDEX], &[(INDEX, "0")], "cannot be used with"),
        (&["--once"], &[("REGMIRROR_SHARD", "1/3"), ("REGMIRROR_SHARDS", "3"), ("REGMIRROR_SHARD_INDEX_ENV", INDEX), (INDEX, "0")], "cannot be used with"),
        (&["--once"], &[("REGMIRROR_SHARDS", "3")], "--shard-index-env <VAR>"),
        (&["--once", "--shard", "0/3"], &[], "write it as I/N"),
        (&k8s, &[], "JOB_COMPLETION_INDEX is not set (Kubernetes sets JOB_COMPLETION_INDEX only in the pods of a Job with completionMode: Indexed)"),
        (&k8s, &[(INDEX, "3")], "JOB_COMPLETION_INDEX=3 is out of range for --shards 3: indexes run from 0 to 2"),
        (&k8s, &[(INDEX, "1/3")], "JOB_COMPLETION_INDEX=\"1/3\" is not a shard index: expected a whole number from 0 to 2"),
        (&["check", "--shards", "3", "--shard-index-env", "AWS_BATCH_JOB_ARRAY_INDEX"], &[], "AWS_BATCH_JOB_ARRAY_INDEX is not set"),
    ];
    let mut failures = Vec::new();
    for (args, env, named) in cases {
        let mut command = sandbox.regmirror();
        command
            .env_remove(INDEX)
            .env_remove("AWS_BATCH_JOB_ARRAY_INDEX");
        let run = command.args(*args).envs(env.iter().copied()).run();
        if run.code != Some(2) || !run.stderr.contains(named) || !run.stdout.is_empty() {
            failures.push(format!(
                "{env:?} regmirror {}: expected exit 2 and `{named}` on stderr\n{}",
                args.join(" "),
                run.output()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The same flags with a good index: `check` names the shard, counted from 1 as --shard
    // counts, and the index it came from.
    let run = sandbox
        .regmirror()
        .arg("check")
        .args(k8s)
        .env(INDEX, "2")
        .run();
    run.assert_success();
    assert!(
        run.stdout
            .contains("shard 3/3 (JOB_COMPLETION_INDEX=2, counted from 0): "),
        "{}",
        run.output()
    );
}

/// `check` validates the file only: a valid config is planned without contacting any registry.
#[test]
fn check_sends_no_request_even_for_a_valid_config() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.host());
    let sandbox = Sandbox::new();
    sandbox.write_file(
        "conf/mirrors.toml",
        &format!(
            "images = [\"{0}/team/app:1.0\"]\n[defaults]\ntarget = \"{0}/mirror\"\n\n[[mirror]]\nsource = \"{0}/team/tool\"\ninclude = ['v1\\..*']\nlatest = 2\n",
            proxy.host()
        ),
    );
    let run = sandbox
        .regmirror()
        .args(["check", "-c", "conf/mirrors.toml"])
        .run();
    run.assert_success();
    assert!(
        run.stdout
            .starts_with("conf/mirrors.toml: 1 image and 1 repository by tag rules in 2 mirrors\n"),
        "{}",
        run.output()
    );
    // Rules are checked and printed, and nothing is listed.
    let rules_line = format!(
        "  {0}/team/tool: tags listed at each run, selected by include v1\\..*; latest 2 → {0}/mirror/team/tool\n",
        proxy.host()
    );
    assert!(run.stdout.contains(&rules_line), "{}", run.output());
    assert_eq!(proxy.requests(), Vec::<Logged>::new());
}

#[test]
fn paths_in_the_config_are_relative_to_the_config_file_and_unrelated_docker_entries_are_ignored() {
    let sandbox = Sandbox::new();
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ==\n-----END CERTIFICATE-----\n";
    sandbox.write_file("conf/ca.pem", pem);
    sandbox.write_file(
        "conf/mirrors.toml",
        "images = [\"r.io/app:1\"]\n[defaults]\ntarget = \"t.io/m\"\n[registries.\"r.io\"]\nca_file = \"ca.pem\"\n",
    );
    // A broken entry for a registry this config never touches is not this config's problem.
    sandbox.write_docker_config(r#"{"auths":{"unrelated.example.com":{"auth":"!!!"}}}"#);
    let run = sandbox
        .regmirror()
        .args(["check", "-c", "conf/mirrors.toml"])
        .run();
    run.assert_success();

    // The same broken entry for a registry the config uses is refused, naming file and entry.
    sandbox.write_docker_config(r#"{"auths":{"https://r.io":{"auth":"!!!"}}}"#);
    let run = sandbox
        .regmirror()
        .args(["check", "-c", "conf/mirrors.toml"])
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains(".docker/config.json"),
        "{}",
        run.output()
    );
    assert!(run.stderr.contains("\"https://r.io\""), "{}", run.output());

    // A CA file that holds no certificate is refused, not silently ignored by TLS.
    sandbox.write_docker_config("{}");
    sandbox.write_file("conf/ca.pem", "not a certificate\n");
    let run = sandbox
        .regmirror()
        .args(["check", "-c", "conf/mirrors.toml"])
        .run();
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("ca_file: conf/ca.pem holds no PEM certificate"),
        "{}",
        run.output()
    );
}

#[test]
fn a_ca_file_holding_a_private_key_is_refused_naming_the_file_and_the_key() {
    let sandbox = Sandbox::new();
    let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ==\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAs3cr3tK3y==\n-----END RSA PRIVATE KEY-----\n";
    sandbox.write_file("conf/ca.pem", &format!("{cert}{key}"));
    sandbox.write_file(
        "conf/mirrors.toml",
        "images = [\"r.io/app:1\"]\n[defaults]\ntarget = \"t.io/m\"\nlayout = \"registry\"\n[registries.\"t.io\"]\nca_file = \"ca.pem\"\n",
    );
    for command in [
        &["check"][..],
        &["clients", "--out", "clients"],
        &["--once"],
    ] {
        let run = sandbox
            .regmirror()
            .args(command)
            .args(["-c", "conf/mirrors.toml"])
            .run();
        run.assert_code(2);
        assert!(
            run.stderr.contains(
                "registries.\"t.io\".ca_file: conf/ca.pem holds a private key (RSA PRIVATE KEY)"
            ),
            "{command:?}\n{}",
            run.output()
        );
        assert!(!run.output().contains("s3cr3tK3y"), "{}", run.output());
    }
    assert!(!sandbox.path().join("clients").exists());
}

/// A value from `${VAR}` is never quoted in an error: the variable may hold a secret, and the
/// error reaches the log and `/healthz`. The message names the variable instead.
#[test]
fn an_error_never_quotes_what_a_variable_expanded_to() {
    const SECRET: &str = "s3cr3t-pr0xy";
    let images = "images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n";
    let hub = "[registries.\"docker.io\"]\nendpoint = \"${V}\"\n";
    let cases: Vec<(String, String, &str)> = vec![
        // Credentials in an endpoint's URL.
        (
            format!("{images}{hub}"),
            format!("https://user:{SECRET}@proxy.example.com/hub"),
            "registries.\"docker.io\".endpoint \"${V}\": holds credentials",
        ),
        // Any other refusal of an endpoint quotes it too.
        (
            format!("{images}{hub}"),
            format!("ftp://user:{SECRET}@proxy.example.com/hub"),
            "registries.\"docker.io\".endpoint \"${V}\": the scheme is ftp:",
        ),
        (
            format!("{images}{hub}"),
            format!("https://proxy.example.com/{SECRET}/Hub"),
            "its path \"<redacted>\" is not a repository path",
        ),
        (
            "images = [\"${V}\"]\n[defaults]\ntarget = \"r.io/m\"\n".to_string(),
            format!("u:{SECRET}@reg.io/app:1"),
            "${V}",
        ),
        (
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"${V}\"\n".to_string(),
            format!("r.io/{SECRET}/Bad"),
            "invalid target \"${V}\"",
        ),
        (
            format!("{images}layout = \"${{V}}\"\n"),
            SECRET.to_string(),
            "defaults.layout is \"${V}\"",
        ),
        (
            format!("{images}[server]\nlisten = \"${{V}}\"\n"),
            format!("{SECRET}:90"),
            "server.listen: \"${V}\" is not an address",
        ),
        (
            "[ssm]\nparameter = \"${V}\"\n".to_string(),
            format!("{SECRET}/images"),
            "SSM parameter \"${V}\"",
        ),
    ];
    let sandbox = Sandbox::new();
    for (toml, value, expected) in cases {
        sandbox.write_config(&toml);
        let run = sandbox.regmirror().arg("check").env("V", &value).run();
        run.assert_code(2);
        assert!(
            !run.output().contains(SECRET),
            "{toml}with V={value}:\n{}",
            run.output()
        );
        assert!(
            run.stderr.contains(expected),
            "{toml}with V={value}: expected {expected:?}\n{}",
            run.output()
        );
    }
}

#[test]
fn a_target_written_as_a_url_gets_a_hint() {
    let sandbox = Sandbox::new();
    sandbox.write_config("images = [\"nginx\"]\n[defaults]\ntarget = \"https://r.io/m\"\n");
    let run = sandbox.regmirror().arg("check").run();
    run.assert_code(2);
    assert!(run.stderr.contains("write `r.io/m`"), "{}", run.output());
}

/// The README's annotated mirrors.toml is a config `check` accepts: a key renamed in the code
/// and not in the README (or the other way round) fails here.
#[test]
fn the_readme_example_config_passes_check() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split_once("\n## mirrors.toml\n")
        .expect("a mirrors.toml section in the README")
        .1;
    let example = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a toml block in the mirrors.toml section")
        .0
        // The README elides the digest; any well-formed one will do.
        .replace("sha256:…", &format!("sha256:{}", "0".repeat(64)));
    let sandbox = Sandbox::new();
    let path = sandbox.write_config(&example);
    let run = sandbox
        .regmirror()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("DOCKERHUB_USERNAME", "someone")
        .env("DOCKERHUB_TOKEN", "dckr_pat_example")
        .env("REGMIRROR_SYNC_TOKEN", "example")
        .run();
    run.assert_success();
    assert!(run.stdout.contains(" in 5 mirrors"), "{}", run.output());
}
