//! The signed deliveries `POST /sync` acted on lately, so a replay runs nothing.
//!
//! A webhook's signature covers its body only: anyone who saw a delivery (the pod network
//! carries it in clear behind the ingress) can send it again, and so can GitHub's
//! "Redeliver". A delivery is known by two keys, its `X-GitHub-Delivery` id and its signature
//! (the HMAC of its body): the id alone would let a replay through with a fresh id, since no
//! header is signed. A repeat of either is answered as already handled. The memory is
//! bounded: the last [`REMEMBERED`] deliveries, the oldest forgotten first.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// How many deliveries are remembered: days of a busy organisation's package events, in
/// about 200 KiB.
pub const REMEMBERED: usize = 1000;

/// What one delivery is known by: a digest of its id, and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    keys: Vec<[u8; 32]>,
}

impl Delivery {
    /// A delivery whose body's HMAC is `signature`, with the `X-GitHub-Delivery` id it came
    /// with, if any. The id is hashed, so a long one costs no more than a short one.
    pub fn new(signature: &[u8], id: Option<&[u8]>) -> Delivery {
        let mut keys = vec![Self::key(b"signature", signature)];
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            keys.push(Self::key(b"id", id));
        }
        Delivery { keys }
    }

    fn key(kind: &[u8], value: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(kind);
        hash.update([0]);
        hash.update(value);
        hash.finalize().into()
    }
}

/// The last [`REMEMBERED`] deliveries.
#[derive(Debug, Default)]
pub struct Deliveries {
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    known: HashSet<[u8; 32]>,
    /// The deliveries in the order they came, to forget the oldest.
    order: VecDeque<Delivery>,
}

impl Deliveries {
    /// Remembers `delivery` and says whether it is new: `false` if its id or its signature
    /// was seen among the last [`REMEMBERED`]. Checked and remembered at once, so two copies
    /// sent together run once.
    pub fn first_time(&self, delivery: &Delivery) -> bool {
        let mut recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if delivery.keys.iter().any(|key| recent.known.contains(key)) {
            return false;
        }
        if recent.order.len() == REMEMBERED {
            if let Some(oldest) = recent.order.pop_front() {
                for key in &oldest.keys {
                    recent.known.remove(key);
                }
            }
        }
        recent.known.extend(delivery.keys.iter().copied());
        recent.order.push_back(delivery.clone());
        true
    }

    /// Forgets `delivery`, which was refused (no mirror matched, shutting down): sent again,
    /// after the config is fixed, it is acted on.
    pub fn forget(&self, delivery: &Delivery) {
        let mut recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = recent.order.iter().rposition(|d| d == delivery) {
            recent.order.remove(at);
            for key in &delivery.keys {
                recent.known.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_or_signature_is_not_new() {
        let seen = Deliveries::default();
        let first = Delivery::new(b"mac-1", Some(b"72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(seen.first_time(&first));
        assert!(!seen.first_time(&first), "the same delivery again");
        // Replayed with a fresh id: the body's signature gives it away.
        assert!(!seen.first_time(&Delivery::new(b"mac-1", Some(b"fresh-id"))));
        // Another body under a used id: the id gives it away.
        assert!(!seen.first_time(&Delivery::new(
            b"mac-2",
            Some(b"72d3162e-cc78-11e3-81ab-4c9367dc0958")
        )));
        // Without an id, the signature alone.
        assert!(seen.first_time(&Delivery::new(b"mac-3", None)));
        assert!(!seen.first_time(&Delivery::new(b"mac-3", Some(b""))));
        // An id equal to some signature's bytes is still another key.
        assert!(seen.first_time(&Delivery::new(b"mac-4", Some(b"mac-1"))));
    }

    #[test]
    fn only_the_last_thousand_are_remembered() {
        let seen = Deliveries::default();
        let nth = |n: usize| Delivery::new(format!("mac-{n}").as_bytes(), Some(&n.to_be_bytes()));
        for n in 0..=REMEMBERED {
            assert!(seen.first_time(&nth(n)), "{n}");
        }
        // The first was pushed out by the thousand after it; the second was not.
        assert!(seen.first_time(&nth(0)));
        assert!(!seen.first_time(&nth(2)));
        let recent = seen.inner.lock().unwrap();
        assert_eq!(recent.order.len(), REMEMBERED);
        assert_eq!(recent.known.len(), 2 * REMEMBERED);
    }

    #[test]
    fn a_forgotten_delivery_is_new_again() {
        let seen = Deliveries::default();
        let refused = Delivery::new(b"mac", Some(b"id"));
        assert!(seen.first_time(&refused));
        seen.forget(&refused);
        assert!(seen.first_time(&refused));
        assert!(!seen.first_time(&refused));
    }
}
