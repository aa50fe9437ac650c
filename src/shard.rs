//! Splitting one image list between several scheduled tasks: `--shard I/N`, or `--shards N`
//! with the index counted from 0 in an environment variable (`--shard-index-env`).
//!
//! Each image goes to exactly one of N shards, chosen by a hash of its target reference. The
//! hash is SHA-256, not Rust's `Hash`, so every task, on any machine and any version, agrees
//! on the split; adding an image moves no other.
//!
//! Two ways to name a shard, because schedulers count differently: a person writing one task
//! per shard counts from 1 (`--shard 2/3`), while Kubernetes Indexed Jobs (and AWS Batch array
//! jobs) give each pod an index from 0 in an environment variable. Reading that variable
//! ourselves, 0-based, saves every recipe a line of shell arithmetic that is easy to get wrong
//! by one; both forms become the same 1-based [`Shard`].

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether this shard mirrors the image whose target is `target`.
    pub fn includes(&self, target: &str) -> bool {
        let digest = Sha256::digest(target.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl Shard {
    /// The shard whose 0-based index is the value of the environment variable `var`
    /// (`value`, `None` when unset), one of `count`: `JOB_COMPLETION_INDEX=0` is shard 1.
    pub fn from_zero_based(
        var: &str,
        value: Option<&str>,
        count: u32,
    ) -> Result<Shard, ShardError> {
        let var = var.to_string();
        let Some(value) = value else {
            return Err(ShardError::IndexUnset { var });
        };
        let index: u32 = value
            .trim()
            .parse()
            .map_err(|_| ShardError::IndexNotANumber {
                var: var.clone(),
                value: value.to_string(),
                count,
            })?;
        if index >= count {
            return Err(ShardError::IndexOutOfRange { var, index, count });
        }
        Ok(Shard {
            index: index + 1,
            count,
        })
    }
}

/// Why `--shard-index-env` names no shard: bad usage, exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error(
        "--shard-index-env {var}: {var} is not set (Kubernetes sets JOB_COMPLETION_INDEX only \
         in the pods of a Job with completionMode: Indexed)"
    )]
    IndexUnset { var: String },
    #[error(
        "--shard-index-env {var}: {var}={value:?} is not a shard index: expected a whole number \
         from 0 to {last} (--shards {count}, counted from 0)",
        last = count - 1
    )]
    IndexNotANumber {
        var: String,
        value: String,
        count: u32,
    },
    #[error(
        "--shard-index-env {var}: {var}={index} is out of range for --shards {count}: indexes \
         run from 0 to {last} (an Indexed Job's completions must equal --shards)",
        last = count - 1
    )]
    IndexOutOfRange { var: String, index: u32, count: u32 },
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard {s:?}: write it as I/N, 1 ≤ I ≤ N, such as 1/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_lands_in_exactly_one_shard_roughly_evenly() {
        let targets: Vec<String> = (0..3000)
            .map(|i| format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/img{i}:v{i}"))
            .collect();
        let shards: Vec<Shard> = (1..=3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = [0usize; 3];
        for target in &targets {
            let owners: Vec<usize> = (0..3).filter(|&k| shards[k].includes(target)).collect();
            assert_eq!(owners.len(), 1, "{target}: {owners:?}");
            sizes[owners[0]] += 1;
        }
        for size in sizes {
            assert!((800..1200).contains(&size), "{sizes:?}");
        }
        assert!(targets
            .iter()
            .all(|t| Shard { index: 1, count: 1 }.includes(t)));
    }

    #[test]
    fn the_split_is_fixed_by_the_target_alone() {
        // Pinned: a change of hash would silently move images between running tasks.
        let shard = |t: &str| (1..=4).find(|&i| Shard { index: i, count: 4 }.includes(t));
        assert_eq!(
            shard("r.io/mirror/nginx:stable"),
            shard("r.io/mirror/nginx:stable")
        );
        let pinned: Vec<_> = ["r.io/m/a:1", "r.io/m/b:1", "r.io/m/c:1", "r.io/m/d:1"]
            .iter()
            .map(|t| shard(t).unwrap())
            .collect();
        assert_eq!(pinned, PINNED);
    }

    // Computed independently: python3 -c "import hashlib; print(int.from_bytes(hashlib.sha256(b'r.io/m/a:1').digest()[:8], 'big') % 4 + 1)"
    const PINNED: [u32; 4] = [2, 3, 3, 4];

    #[test]
    fn zero_based_indexes_from_the_environment() {
        let shard = |value: Option<&str>| Shard::from_zero_based("JOB_COMPLETION_INDEX", value, 3);
        assert_eq!(shard(Some("0")), Ok(Shard { index: 1, count: 3 }));
        assert_eq!(shard(Some("2")), Ok(Shard { index: 3, count: 3 }));
        let message = |value| shard(value).unwrap_err().to_string();
        assert_eq!(
            message(None),
            "--shard-index-env JOB_COMPLETION_INDEX: JOB_COMPLETION_INDEX is not set (Kubernetes \
             sets JOB_COMPLETION_INDEX only in the pods of a Job with completionMode: Indexed)"
        );
        assert_eq!(
            message(Some("3")),
            "--shard-index-env JOB_COMPLETION_INDEX: JOB_COMPLETION_INDEX=3 is out of range for \
             --shards 3: indexes run from 0 to 2 (an Indexed Job's completions must equal --shards)"
        );
        for bad in ["", "-1", "1/3", "one", "$(JOB_COMPLETION_INDEX)"] {
            let err = message(Some(bad));
            assert!(
                err.contains(&format!(
                    "JOB_COMPLETION_INDEX={bad:?} is not a shard index"
                )) && err.contains("from 0 to 2 (--shards 3, counted from 0)"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn parsing() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "1/3/4", ""] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("write it as I/N"), "{bad}: {err}");
        }
    }
}
