//! Splitting one image list between several scheduled tasks: `--shard I/N`.
//!
//! Each image goes to exactly one of N shards, chosen by a hash of its target reference. The
//! hash is SHA-256, not Rust's `Hash`, so every task, on any machine and any version, agrees
//! on the split; adding an image moves no other.

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
    fn parsing() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "1/3/4", ""] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("write it as I/N"), "{bad}: {err}");
        }
    }
}
