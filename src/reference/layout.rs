//! OCI image layouts named the way skopeo names them, so a name in a message can be pasted
//! into skopeo and the other way round.
//!
//! - `oci:DIR` is a layout (a directory with `oci-layout`, `index.json` and `blobs/`): a
//!   target prefix, or a `[[mirror]]` source listing the images named by bare tags.
//! - `oci:DIR:NAME` is the image whose `index.json` entry has the annotation
//!   `org.opencontainers.image.ref.name` = NAME, such as
//!   `oci:/mnt/transfer:mirror/docker.io/library/nginx:1.27`.
//!
//! DIR runs to the first `:` (as in skopeo, so it cannot hold one); a relative DIR is taken
//! from the current directory and made absolute once, here. Inside regmirror a layout is a
//! registry name, `oci:/abs/DIR`, served by the layout store instead of the network; a
//! repository in it is the part of NAME before its tag (`mirror/docker.io/library/nginx`),
//! and a NAME without a tag (`v1`, as oras and `skopeo copy … oci:DIR:v1` write) is a tag of
//! the layout's unnamed repository, the empty path.

use std::path::{Component, Path, PathBuf};

/// What a layout's name starts with.
pub const SCHEME: &str = "oci:";

/// The annotation that names an image in a layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Whether a registry name (of a reference or repository) is a layout's: `oci:/abs/DIR`.
pub fn is_layout(registry: &str) -> bool {
    registry.starts_with(SCHEME)
}

/// The directory of a layout's registry name; `None` for a registry.
pub fn layout_dir(registry: &str) -> Option<&Path> {
    registry.strip_prefix(SCHEME).map(Path::new)
}

/// The name an image has in a layout: `<repository>:<tag>`, or the bare tag in the unnamed
/// repository.
pub fn ref_name(repository: &str, tag: &str) -> String {
    if repository.is_empty() {
        tag.to_string()
    } else {
        format!("{repository}:{tag}")
    }
}

/// A layout's name for an image split into repository and tag: at the last `:` after the last
/// `/`; a name without one is a tag of the unnamed repository (`""`).
pub fn split_ref_name(name: &str) -> (&str, &str) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => ("", name),
    }
}

/// `oci:DIR[:NAME]` split into the layout's registry name (`oci:` and DIR made absolute) and
/// NAME, if one is written.
pub(super) fn split(written: &str) -> Result<(String, Option<&str>), String> {
    let rest = written
        .strip_prefix(SCHEME)
        .ok_or_else(|| format!("does not start with {SCHEME}"))?;
    let (dir, name) = match rest.split_once(':') {
        Some((dir, name)) => (dir, Some(name)),
        None => (rest, None),
    };
    if dir.is_empty() {
        return Err("names no directory: write oci:/path/to/layout".to_string());
    }
    if written.chars().any(char::is_control) {
        return Err("holds control characters".to_string());
    }
    if name == Some("") {
        return Err("ends in `:` with no name after it".to_string());
    }
    let absolute = absolute(dir)?;
    let dir = absolute
        .to_str()
        .ok_or_else(|| "the current directory is not UTF-8".to_string())?;
    if dir.contains(':') {
        return Err(format!(
            "the layout's directory {dir:?} holds a `:`, which ends DIR in oci:DIR:NAME"
        ));
    }
    Ok((format!("{SCHEME}{dir}"), name))
}

/// `dir` as an absolute path, `.` and `..` taken away (from the current directory when it is
/// relative), with no trailing slash.
fn absolute(dir: &str) -> Result<PathBuf, String> {
    let path = Path::new(dir);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory for {dir:?}: {e}"))?
            .join(path)
    };
    let mut normal = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_last_colon_after_the_last_slash() {
        assert_eq!(
            split_ref_name("mirror/docker.io/library/nginx:1.27"),
            ("mirror/docker.io/library/nginx", "1.27")
        );
        assert_eq!(
            split_ref_name("127.0.0.1-5001/app:v1"),
            ("127.0.0.1-5001/app", "v1")
        );
        assert_eq!(split_ref_name("nginx:1"), ("nginx", "1"));
        assert_eq!(split_ref_name("v1"), ("", "v1"));
        assert_eq!(split_ref_name("a:b/c"), ("", "a:b/c"));
        for (repository, tag) in [("mirror/nginx", "1.27"), ("", "latest")] {
            let name = ref_name(repository, tag);
            assert_eq!(split_ref_name(&name), (repository, tag));
        }
    }

    #[test]
    fn a_layout_is_an_absolute_directory_up_to_the_first_colon() {
        let (registry, name) = split("oci:/mnt/transfer:mirror/nginx:1").unwrap();
        assert_eq!(registry, "oci:/mnt/transfer");
        assert_eq!(name, Some("mirror/nginx:1"));
        assert_eq!(
            split("oci:/mnt/./a/../transfer/").unwrap().0,
            "oci:/mnt/transfer"
        );
        let cwd = std::env::current_dir().unwrap();
        let (relative, none) = split("oci:out").unwrap();
        assert_eq!(relative, format!("oci:{}", cwd.join("out").display()));
        assert_eq!(none, None);
        assert!(is_layout(&relative));
        assert_eq!(layout_dir(&relative), Some(cwd.join("out").as_path()));
        for bad in ["oci:", "oci::x", "oci:/a:", "oci:/a\n:b", "docker://x"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}
