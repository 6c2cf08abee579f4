//! The in-process [`CounterStore`]: this replica's memory (the default).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Charge, CounterStore, KeyId, StoreError};

#[derive(Debug, Default)]
struct Counters {
    used: u64,
    bucket: Option<(f64, Instant)>,
}

/// Counters in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    keys: Mutex<HashMap<KeyId, Counters>>,
}

impl MemoryStore {
    fn with<T>(&self, key: &KeyId, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        f(keys.entry(key.clone()).or_default())
    }
}

impl CounterStore for MemoryStore {
    fn used(&self, key: &KeyId) -> Result<u64, StoreError> {
        Ok(self.with(key, |c| c.used))
    }

    fn charge(&self, key: &KeyId, samples: u64, budget: Option<u64>) -> Result<Charge, StoreError> {
        Ok(self.with(key, |c| match budget {
            Some(b) if c.used.saturating_add(samples) > b => Charge::Refused(c.used),
            _ => {
                c.used = c.used.saturating_add(samples);
                Charge::Charged(c.used)
            }
        }))
    }

    fn refund(&self, key: &KeyId, samples: u64) -> Result<(), StoreError> {
        self.with(key, |c| c.used = c.used.saturating_sub(samples));
        Ok(())
    }

    fn take_request(&self, key: &KeyId, rate: f64, burst: f64, now: Instant) -> Result<Option<Duration>, StoreError> {
        Ok(self.with(key, |c| {
            let (tokens, updated) = c.bucket.unwrap_or((burst, now));
            let tokens = (tokens + now.saturating_duration_since(updated).as_secs_f64() * rate).min(burst);
            if tokens >= 1.0 {
                c.bucket = Some((tokens - 1.0, now));
                None
            } else {
                c.bucket = Some((tokens, now));
                Some(Duration::from_secs_f64((1.0 - tokens) / rate))
            }
        }))
    }

    fn describe(&self) -> String {
        "memory (this replica only)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_refuses_refunds_and_limits() -> Result<(), StoreError> {
        let store = MemoryStore::default();
        let k = KeyId::of("k");
        assert_eq!(store.charge(&k, 3, Some(4))?, Charge::Charged(3));
        assert_eq!(store.charge(&k, 2, Some(4))?, Charge::Refused(3));
        store.refund(&k, 10)?;
        assert_eq!(store.used(&k)?, 0);
        assert_eq!(store.take_request(&k, 1.0, 1.0, Instant::now())?, None);
        assert!(store.take_request(&k, 1.0, 1.0, Instant::now())?.is_some());
        Ok(())
    }
}
