//! The shape of `src/`: a folder (or file) per subsystem, and no import circle between the
//! top-level modules. A circle means two subsystems can no longer be read, tested or changed
//! one at a time, so it fails the suite rather than a review.
//!
//! Imports are read from the source text: every `crate::<module>` path outside comments,
//! including the braced form `use crate::{a, b}`. A folder counts as one module; circles
//! inside a folder are that folder's own business.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a file under `src/` belongs to (`registry/ratelimit/budget.rs` →
/// `registry`), or `None` for the crate root and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The top-level modules named by `crate::` paths in `code` (comments already removed).
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').unwrap_or(braced.len());
            for item in braced[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// `source` without `//` comments (doc comments included: a link is not an import).
fn without_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal ("https://…") is not a comment; lines that hold
            // one never also hold a `crate::` path in this code base, so keeping them whole
            // is harmless.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which top-level module imports which, from the files under `src`.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let Some(module) = top_module(src, &file) else {
            continue;
        };
        let code = without_comments(&fs::read_to_string(&file).unwrap());
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(imports(&code).into_iter().filter(|m| *m != module));
    }
    graph
}

/// A circle through `start`, if there is one, as the list of modules on it.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen).then(|| {
        path.push(start.to_string());
        path
    })
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(
        graph.len() >= 10,
        "read only {} top-level modules from {}: the reader is broken",
        graph.len(),
        src.display()
    );
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|module| circle_through(&graph, module))
        .map(|circle| circle.join(" → "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles between top-level modules of src/ (a folder counts as one):\n{}",
        circles.join("\n")
    );
}

#[test]
fn every_top_level_module_is_declared_in_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    for module in import_graph(&src).keys() {
        assert!(
            lib.contains(&format!("pub mod {module};")),
            "src/{module} is not declared in src/lib.rs"
        );
        assert!(
            lib.contains(&format!("[`{module}`]")),
            "src/lib.rs's map of the modules does not mention {module}"
        );
    }
}

#[test]
fn the_reader_sees_a_circle_when_there_is_one() {
    let mut graph = BTreeMap::new();
    graph.insert(
        "a".to_string(),
        imports(&without_comments("use crate::{b, c::D};\n// crate::z")),
    );
    graph.insert("b".to_string(), imports("let x = crate::a::f();"));
    graph.insert("c".to_string(), BTreeSet::new());
    assert_eq!(graph["a"], BTreeSet::from(["b".into(), "c".into()]));
    assert_eq!(
        circle_through(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    assert_eq!(circle_through(&graph, "c"), None);
}
