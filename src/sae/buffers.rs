//! Large f32 scratch buffers kept between training steps. A fresh buffer
//! costs a page fault per 4 KiB on first touch, which for the step's larger
//! buffers (the guided term's partial gradients, hundreds of MB) is a large
//! part of the step. The pool is process-wide, so units training at once
//! share it; a finished [`Trainer`](super::Trainer) empties it, so that
//! what follows training in the process does not carry its peak.

use std::sync::Mutex;

/// Buffers smaller than this are not worth keeping (floats).
const MIN_KEPT: usize = 1 << 16;
/// How many buffers the pool keeps (the largest).
const KEPT: usize = 4;

struct BufferPool {
    bufs: Mutex<Vec<Vec<f32>>>,
}

impl BufferPool {
    const fn new() -> BufferPool {
        BufferPool {
            bufs: Mutex::new(Vec::new()),
        }
    }

    fn take(&self, len: usize) -> Vec<f32> {
        let mut pool = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest that fits, else the largest (grown).
        let pick = (0..pool.len())
            .filter(|&q| pool[q].capacity() >= len)
            .min_by_key(|&q| pool[q].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&q| pool[q].capacity()));
        let mut v = pick.map(|q| pool.swap_remove(q)).unwrap_or_default();
        drop(pool);
        if v.len() > len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        v
    }

    fn give(&self, v: Vec<f32>) {
        if v.capacity() < MIN_KEPT {
            return;
        }
        let mut pool = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        pool.push(v);
        if pool.len() > KEPT {
            let q = (0..pool.len()).min_by_key(|&q| pool[q].capacity());
            pool.swap_remove(q.expect("pool is not empty"));
        }
    }

    fn release(&self) {
        // Freed outside the lock.
        let bufs = std::mem::take(&mut *self.bufs.lock().unwrap_or_else(|e| e.into_inner()));
        drop(bufs);
    }

    #[cfg(test)]
    fn capacities(&self) -> Vec<usize> {
        let mut c: Vec<usize> = self
            .bufs
            .lock()
            .unwrap()
            .iter()
            .map(Vec::capacity)
            .collect();
        c.sort_unstable();
        c
    }
}

static POOL: BufferPool = BufferPool::new();

/// A buffer of `len` values with unspecified contents.
pub(crate) fn take_buffer(len: usize) -> Vec<f32> {
    POOL.take(len)
}

/// Returns a buffer for reuse.
pub(crate) fn give_buffer(v: Vec<f32>) {
    POOL.give(v)
}

/// Frees the pooled buffers (those in use at the time come back to the pool
/// as usual).
pub(crate) fn release_buffers() {
    POOL.release()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_smallest_fit_keeps_the_largest_and_releases_all() {
        let pool = BufferPool::new();
        for n in [1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20] {
            pool.give(vec![0.0; n]);
        }
        // Too small to keep.
        pool.give(vec![0.0; 100]);
        assert_eq!(pool.capacities(), vec![1 << 17, 1 << 18, 1 << 19, 1 << 20]);
        let v = pool.take(200_000);
        assert_eq!((v.len(), v.capacity()), (200_000, 1 << 18));
        assert_eq!(pool.capacities(), vec![1 << 17, 1 << 19, 1 << 20]);
        // Nothing fits: the largest grows.
        let w = pool.take(3 << 20);
        assert_eq!(w.len(), 3 << 20);
        assert_eq!(pool.capacities(), vec![1 << 17, 1 << 19]);
        pool.give(v);
        pool.give(w);
        assert_eq!(pool.capacities().len(), KEPT);
        pool.release();
        assert!(pool.capacities().is_empty());
        assert_eq!(pool.take(10).len(), 10);
    }
}
