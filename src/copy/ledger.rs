//! Who does a piece of work once per pass, and what it came to, for everyone else.
//!
//! Images of one pass often need the same thing done: the same blob placed in a target
//! registry, the same manifest pushed into a target repository. A [`Ledger`] hands each key
//! to the first image that [`Ledger::claim`]s it; later images wait for that one and read its
//! result. An image that claims a key and gives up without a result (its task ended, its
//! error is not to be shared) releases it, and the next one to ask claims it anew.
//!
//! Unlike a `OnceCell` per key, claiming is separate from doing, so one image can claim a
//! key for each of several targets and then do the work for all of them at once (one pull,
//! one blob read streamed to every target).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// A key's state: being done (its result will be sent), or done.
#[derive(Debug)]
enum Entry<V> {
    Pending(watch::Receiver<Option<V>>),
    Done(V),
}

/// Results by key, for the length of one pass.
#[derive(Debug)]
pub struct Ledger<K, V> {
    entries: Arc<Mutex<HashMap<K, Entry<V>>>>,
}

impl<K, V> Default for Ledger<K, V> {
    fn default() -> Self {
        Ledger {
            entries: Arc::default(),
        }
    }
}

/// What a claim got.
#[derive(Debug)]
pub enum Claim<K: Eq + Hash, V> {
    /// The work is this caller's: it must [`Promise::keep`] it (or drop the promise).
    Mine(Promise<K, V>),
    /// Someone did it already.
    Done(V),
    /// Someone is doing it: [`Claim::wait`] for the result.
    Pending(Pending<K, V>),
}

/// The duty to settle a key.
#[derive(Debug)]
pub struct Promise<K: Eq + Hash, V> {
    key: Option<K>,
    sender: watch::Sender<Option<V>>,
    entries: Arc<Mutex<HashMap<K, Entry<V>>>>,
}

/// A key someone else is settling.
#[derive(Debug)]
pub struct Pending<K, V> {
    key: K,
    receiver: watch::Receiver<Option<V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Ledger<K, V> {
    /// The work for `key`: this caller's if nobody has it, else its result or its progress.
    pub fn claim(&self, key: K) -> Claim<K, V> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some(Entry::Done(value)) => Claim::Done(value.clone()),
            Some(Entry::Pending(receiver)) => Claim::Pending(Pending {
                key,
                receiver: receiver.clone(),
            }),
            None => {
                let (sender, receiver) = watch::channel(None);
                entries.insert(key.clone(), Entry::Pending(receiver));
                Claim::Mine(Promise {
                    key: Some(key),
                    sender,
                    entries: self.entries.clone(),
                })
            }
        }
    }

    /// The result for `key` once whoever does it is done; if they gave up without one, the
    /// work is claimed again (and may come back as this caller's).
    pub async fn settle(&self, key: K) -> Claim<K, V> {
        let mut claim = self.claim(key);
        loop {
            match claim {
                Claim::Pending(pending) => {
                    let key = pending.key.clone();
                    match pending.wait().await {
                        Some(value) => return Claim::Done(value),
                        None => claim = self.claim(key),
                    }
                }
                settled => return settled,
            }
        }
    }
}

impl<K: Eq + Hash, V: Clone> Pending<K, V> {
    /// The result, or `None` if whoever claimed the work gave up without one.
    pub async fn wait(mut self) -> Option<V> {
        let value = self.receiver.wait_for(Option::is_some).await.ok()?;
        value.clone()
    }
}

impl<K: Eq + Hash, V: Clone> Promise<K, V> {
    /// Records the result for everyone, now and later.
    pub fn keep(mut self, value: V) {
        if let Some(key) = self.key.take() {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.insert(key, Entry::Done(value.clone()));
        }
        self.sender.send_replace(Some(value));
    }
}

impl<K: Eq + Hash, V> Drop for Promise<K, V> {
    /// Given up without a result: the key is free again, and waiters are told (their channel
    /// closes with no value).
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_claim_does_the_work_and_the_others_read_its_result() {
        let ledger: Ledger<&str, u32> = Ledger::default();
        let Claim::Mine(promise) = ledger.claim("a") else {
            panic!("the first claim is mine")
        };
        let Claim::Pending(pending) = ledger.claim("a") else {
            panic!("the second waits")
        };
        let waiting = tokio::spawn(pending.wait());
        promise.keep(7);
        assert_eq!(waiting.await.unwrap(), Some(7));
        assert!(matches!(ledger.claim("a"), Claim::Done(7)));
        assert!(matches!(ledger.claim("b"), Claim::Mine(_)));
    }

    #[tokio::test]
    async fn a_dropped_promise_frees_the_key_for_the_next_claim() {
        let ledger: Ledger<&str, u32> = Ledger::default();
        let Claim::Mine(promise) = ledger.claim("a") else {
            panic!("mine")
        };
        let settling = {
            let ledger = Ledger {
                entries: ledger.entries.clone(),
            };
            tokio::spawn(async move {
                match ledger.settle("a").await {
                    Claim::Mine(again) => {
                        again.keep(9);
                        "claimed again"
                    }
                    _ => "not claimed",
                }
            })
        };
        tokio::task::yield_now().await;
        drop(promise);
        assert_eq!(settling.await.unwrap(), "claimed again");
        assert!(matches!(ledger.claim("a"), Claim::Done(9)));
    }
}
