//! Recycled chunk buffers: the `Vec`s that large [`Chunk`](crate::Chunk)s copy a read into
//! come from, and go back to, a small per-worker pool. Allocating and freeing one per read
//! made glibc merge each freed buffer into the top of the worker's arena and trim it, so the
//! next allocation page-faulted again: most of the data path's cost. A chunk dropped on any
//! thread returns its buffer through a bounded lock-free channel; what the pool has no room
//! for is freed.

use crossbeam_channel::{Receiver, Sender};

/// Reads at least this fraction of a pool buffer long are copied into one (smaller ones get
/// an allocation of their own size, which glibc serves from its small-size caches).
const POOLED_FROM: usize = 4;

pub(crate) struct BufferPool {
    size: usize,
    free: Sender<Vec<u8>>,
    take: Receiver<Vec<u8>>,
}

impl BufferPool {
    /// A pool of buffers of `size` bytes, keeping at most `keep` unused ones.
    pub(crate) fn new(size: usize, keep: usize) -> BufferPool {
        let (free, take) = crossbeam_channel::bounded(keep.max(1));
        BufferPool {
            size: size.max(1),
            free,
            take,
        }
    }

    /// A `Vec` holding a copy of `bytes`: a pool buffer for large reads, an exact allocation
    /// for small ones.
    pub(crate) fn copy(&self, bytes: &[u8]) -> Vec<u8> {
        if bytes.len() * POOLED_FROM < self.size || bytes.len() > self.size {
            return bytes.to_vec();
        }
        let mut buf = self.empty();
        buf.extend_from_slice(bytes);
        buf
    }

    /// An empty pool buffer (capacity: the pool's size) to read into.
    pub(crate) fn empty(&self) -> Vec<u8> {
        self.take
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.size))
    }

    /// `buf` as a chunk's bytes: kept when it fills enough of its capacity, else copied
    /// into an allocation of its own size and given back.
    pub(crate) fn fit(&self, buf: Vec<u8>) -> Vec<u8> {
        if buf.len() * POOLED_FROM >= buf.capacity() {
            return buf;
        }
        let small = buf.to_vec();
        self.give_back(buf);
        small
    }

    /// Takes a buffer back (from any thread) if it is one of the pool's.
    pub(crate) fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() == self.size {
            buf.clear();
            let _ = self.free.try_send(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_copies_reuse_returned_buffers_and_small_ones_do_not() {
        let pool = BufferPool::new(1024, 2);
        let a = pool.copy(&[1; 600]);
        assert_eq!((a.len(), a.capacity()), (600, 1024));
        let ptr = a.as_ptr();
        pool.give_back(a);
        let b = pool.copy(&[2; 300]);
        assert_eq!(b.as_ptr(), ptr, "the returned buffer is reused");
        assert_eq!(b, vec![2; 300]);
        let small = pool.copy(&[3; 10]);
        assert_eq!(small.capacity(), 10);
        pool.give_back(small);
        assert!(pool.take.is_empty(), "a foreign buffer is not pooled");
    }
}
