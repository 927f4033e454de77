//! A cache that lives as long as one `coact run`: what several units of a
//! run load alike (the model, a variant's SAE, a dataset's activations) is
//! loaded once. Entries that only one stage's units share are that stage's
//! ([`stage_key`]): the runner drops them when the stage's last unit is done,
//! whatever order the units ran in. The rest are dropped when the run ends.

use anyhow::Result;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Entry = Arc<dyn Any + Send + Sync>;

/// The cache key of `key` as an entry of `stage` alone, dropped by
/// [`RunCache::end_stage`].
pub fn stage_key(stage: &str, key: &str) -> String {
    format!("{}{key}", stage_prefix(stage))
}

fn stage_prefix(stage: &str) -> String {
    // Not a plain "stage/": run-wide keys may start with a stage's name.
    format!("stage:{stage}/")
}
/// One key's value, made at most once: units running at once that want the
/// same key wait for the first maker instead of each loading it.
type Slot = Arc<Mutex<Option<Entry>>>;

#[derive(Default)]
pub struct RunCache {
    entries: Mutex<HashMap<String, Slot>>,
}

impl RunCache {
    /// The value cached under `key`, made by `make` on first use. Keys must
    /// name what the value depends on (an artifact key, a setting); a key
    /// reused with another type is a programming error, reported as such.
    pub fn get_or_try_insert<T: Send + Sync + 'static>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        // The map's lock is held only to find the slot: making may itself use
        // the cache (under other keys), and other keys stay available.
        let slot = self
            .entries
            .lock()
            .expect("cache lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        let mut value = slot.lock().expect("cache slot lock");
        let entry = match &*value {
            Some(e) => e.clone(),
            None => {
                let made: Entry = Arc::new(make()?);
                *value = Some(made.clone());
                made
            }
        };
        entry
            .downcast::<T>()
            .map_err(|_| anyhow::anyhow!("run cache: {key} holds another type"))
    }

    /// Drops every entry whose key starts with `prefix` (to bound memory
    /// once the units that share it are done).
    pub fn evict(&self, prefix: &str) {
        self.entries
            .lock()
            .expect("cache lock")
            .retain(|k, _| !k.starts_with(prefix));
    }

    /// Drops `stage`'s own entries (its units are all done). A unit still
    /// holding one keeps it alive until it lets go.
    pub fn end_stage(&self, stage: &str) {
        self.evict(&stage_prefix(stage));
    }

    #[cfg(test)]
    fn holds(&self, key: &str) -> bool {
        self.entries.lock().expect("cache lock").contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_once_and_evicts_by_prefix() {
        let cache = RunCache::default();
        let mut made = 0;
        let a = cache
            .get_or_try_insert("model/x", || {
                made += 1;
                Ok(7u32)
            })
            .unwrap();
        let b = cache
            .get_or_try_insert("model/x", || -> Result<u32> { panic!("made twice") })
            .unwrap();
        assert_eq!((*a, *b, made), (7, 7, 1));
        assert!(cache
            .get_or_try_insert::<String>("model/x", || Ok("s".into()))
            .is_err());
        cache.evict("model/");
        let c = cache.get_or_try_insert("model/x", || Ok(8u32)).unwrap();
        assert_eq!(*c, 8);
    }

    #[test]
    fn the_end_of_a_stage_drops_its_entries_only() {
        let cache = RunCache::default();
        let own = stage_key("train", "tokens/k1");
        let other = stage_key("bench", "eval/k1");
        // A run-wide key that happens to start with a stage's name.
        let run_wide = "train/model".to_string();
        for k in [&own, &other, &run_wide] {
            cache.get_or_try_insert(k, || Ok(1u8)).unwrap();
        }
        let held = cache.get_or_try_insert(&own, || Ok(2u8)).unwrap();
        cache.end_stage("train");
        assert!(!cache.holds(&own));
        assert!(cache.holds(&other) && cache.holds(&run_wide));
        // What a running unit holds stays valid; a later use makes it anew.
        assert_eq!(*held, 1);
        assert_eq!(*cache.get_or_try_insert(&own, || Ok(3u8)).unwrap(), 3);
    }

    #[test]
    fn units_at_once_make_a_key_once() {
        let cache = RunCache::default();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let values: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        *cache
                            .get_or_try_insert("acts", || {
                                made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(50));
                                Ok(42u64)
                            })
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(values, vec![42; 4]);
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_make_caches_nothing() {
        let cache = RunCache::default();
        assert!(cache
            .get_or_try_insert::<u32>("k", || anyhow::bail!("no"))
            .is_err());
        assert_eq!(*cache.get_or_try_insert("k", || Ok(1u32)).unwrap(), 1);
    }
}
