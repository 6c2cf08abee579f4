//! Values built once per process and key, then shared: public, immutable set-up whose building
//! takes long enough to matter when every session (or every query) would redo it — the LPN
//! code's column table, the vetted HE parameter sets.
//!
//! A value is built outside the lock, so two first users may both build it; the first one
//! stored is kept and handed to both. Values live for the life of the process (one per key in
//! use; keys are parameter sets, so there are few).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

/// A process-wide map from keys to values built on first use (declare it as a `static`).
pub(crate) struct Memo<K, V> {
    values: OnceLock<Mutex<HashMap<K, V>>>,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    /// An empty memo.
    pub(crate) const fn new() -> Self {
        Self { values: OnceLock::new() }
    }

    /// The value of `key`, built by `build` if no value is stored yet; a failed build stores
    /// nothing.
    pub(crate) fn get_or_build<E>(&self, key: K, build: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let values = self.values.get_or_init(Default::default);
        // A poisoned lock only means another thread panicked while inserting; the map is usable.
        if let Some(v) = values.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(v.clone());
        }
        let built = build()?;
        Ok(values.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(built).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value is built once per key and handed out again after; a failed build is retried.
    #[test]
    fn values_are_built_once_per_key() {
        static MEMO: Memo<u32, u64> = Memo::new();
        let mut builds = 0;
        let mut get = |k: u32, fail: bool| {
            MEMO.get_or_build(k, || {
                builds += 1;
                if fail { Err("no") } else { Ok(u64::from(k) * 10) }
            })
        };
        assert_eq!(get(1, true), Err("no"));
        assert_eq!(get(1, false), Ok(10));
        assert_eq!(get(1, true), Ok(10));
        assert_eq!(get(2, false), Ok(20));
        assert_eq!(builds, 3);
    }
}
