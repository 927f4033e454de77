//! A cache that lives as long as one `coact run`: what several units of a
//! run load alike (the model, a variant's SAE, a dataset's activations) is
//! loaded once and dropped when the run ends.

use anyhow::Result;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Entry = Arc<dyn Any + Send + Sync>;
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
