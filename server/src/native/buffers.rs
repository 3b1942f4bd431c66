//! Read and write buffers lent to a connection only while it has bytes in
//! them.
//!
//! Why: a server holds tens of thousands of connections at once, and nearly
//! all of them are idle at any moment (a buyer waiting for the sale to
//! open, a shop's backend between bursts). A 16 KiB read buffer and a
//! 16 KiB write buffer kept by each would cost more than the rest of the
//! connection many times over: 320 MB for 10,000 connections that send
//! nothing. So a connection takes a buffer when it has something to read or
//! to write, and gives it back once it is empty; a partial frame it must
//! keep while the rest is on its way is moved into an allocation of its own
//! length ([`shrink_to_fit`]).
//!
//! Each worker thread keeps the buffers given back in a small pool, so the
//! pipelined hot path, which takes and gives back its buffers on every pass
//! of its loop, reuses warm memory instead of asking the allocator (and
//! touching fresh pages) each time. The pool is bounded in count
//! ([`POOL_LEN`]) and in the size of a buffer it keeps ([`POOLED_MAX`]), so
//! it holds at most `POOL_LEN × POOLED_MAX` per thread whatever the load.

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers a worker thread keeps for reuse.
const POOL_LEN: usize = 8;
/// Smallest buffer worth keeping: the read size of a welcomed connection.
const POOLED_MIN: usize = 16 * 1024;
/// Largest buffer kept; a larger one (a deep pipeline's answers to a client
/// that reads slowly) goes back to the allocator.
const POOLED_MAX: usize = 128 * 1024;

/// Buffers given back, for the next connection that needs one.
#[derive(Debug, Default)]
struct Pool {
    free: Vec<BytesMut>,
}

impl Pool {
    /// An empty buffer with room for at least `min` bytes: the last kept
    /// one that is large enough (a deep pipeline's 64 KiB read buffer
    /// should not come back as a 16 KiB write buffer, to be grown on every
    /// pass), else any kept one, grown, else a new one.
    fn take(&mut self, min: usize) -> BytesMut {
        let fits = self.free.iter().rposition(|buf| buf.capacity() >= min);
        match fits.or_else(|| self.free.len().checked_sub(1)) {
            Some(at) => {
                let mut buf = self.free.swap_remove(at);
                buf.reserve(min);
                buf
            }
            None => BytesMut::with_capacity(min),
        }
    }

    /// Keeps `buf`, emptied, if it is the whole of an allocation of a size
    /// worth keeping and there is room; otherwise frees it. A buffer whose
    /// memory is still shared (a frame split off it is alive) cannot be
    /// reclaimed whole and is freed too.
    fn give(&mut self, mut buf: BytesMut) {
        if self.free.len() >= POOL_LEN {
            return;
        }
        buf.clear();
        if buf.try_reclaim(POOLED_MIN) && buf.capacity() <= POOLED_MAX {
            self.free.push(buf);
        }
    }
}

thread_local! {
    /// This worker thread's pool: connections live and die on the thread
    /// that accepted them, so no buffer ever crosses threads and the pool
    /// needs no lock.
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// An empty buffer with room for at least `min` bytes, from this thread's
/// pool when it has one.
pub(super) fn take(min: usize) -> BytesMut {
    POOL.with_borrow_mut(|pool| pool.take(min))
}

/// Gives `buf` back to this thread's pool (or to the allocator), leaving
/// `buf` empty and without memory.
pub(super) fn give(buf: &mut BytesMut) {
    if buf.capacity() > 0 {
        let buf = std::mem::take(buf);
        POOL.with_borrow_mut(|pool| pool.give(buf));
    }
}

/// Lets `buf` hold no more than its bytes: empty, it gives its memory back
/// ([`give`]); holding part of a frame, that part moves into an allocation
/// of its own length and the buffer goes back. For a connection about to
/// wait for its peer.
pub(super) fn shrink_to_fit(buf: &mut BytesMut) {
    if buf.is_empty() {
        give(buf);
    } else if buf.capacity() > buf.len() {
        let mut kept = BytesMut::from(&buf[..]);
        std::mem::swap(buf, &mut kept);
        give(&mut kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_lent_again_whole() {
        let mut pool = Pool::default();
        let mut buf = pool.take(POOLED_MIN);
        let capacity = buf.capacity();
        let addr = buf.as_ptr();
        buf.extend_from_slice(&[7u8; 1000]);
        // Frames are split off the front as they are decoded.
        drop(buf.split_to(600));
        pool.give(buf);
        let again = pool.take(POOLED_MIN);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), addr, "the same memory, from its start");
        assert_eq!(again.capacity(), capacity);
    }

    #[test]
    fn shared_small_and_huge_buffers_are_not_kept() {
        let mut pool = Pool::default();
        let mut shared = BytesMut::with_capacity(POOLED_MIN);
        shared.extend_from_slice(b"a frame and the next");
        let frame = shared.split_to(7);
        pool.give(shared);
        pool.give(BytesMut::with_capacity(64));
        pool.give(BytesMut::with_capacity(POOLED_MAX * 2));
        assert!(pool.free.is_empty(), "{:?}", pool.free.len());
        assert_eq!(&frame[..], b"a frame");
    }

    #[test]
    fn a_large_enough_buffer_is_lent_first() {
        let mut pool = Pool::default();
        pool.give(BytesMut::with_capacity(4 * POOLED_MIN));
        pool.give(BytesMut::with_capacity(POOLED_MIN));
        assert!(pool.take(2 * POOLED_MIN).capacity() >= 4 * POOLED_MIN);
        assert_eq!(pool.free.len(), 1);
        assert!(pool.take(2 * POOLED_MIN).capacity() >= 2 * POOLED_MIN);
        assert!(pool.free.is_empty());
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = Pool::default();
        for _ in 0..POOL_LEN * 3 {
            pool.give(BytesMut::with_capacity(POOLED_MIN));
        }
        assert_eq!(pool.free.len(), POOL_LEN);
        let taken: Vec<_> = (0..POOL_LEN + 2).map(|_| pool.take(100)).collect();
        assert!(taken.iter().all(|b| b.is_empty() && b.capacity() >= 100));
        assert!(pool.free.is_empty());
    }

    #[test]
    fn a_partial_frame_keeps_only_its_bytes() {
        let mut buf = take(POOLED_MIN);
        buf.extend_from_slice(b"part of a frame");
        shrink_to_fit(&mut buf);
        assert_eq!(&buf[..], b"part of a frame");
        assert_eq!(buf.capacity(), buf.len());
        let mut empty = take(POOLED_MIN);
        shrink_to_fit(&mut empty);
        assert_eq!(empty.capacity(), 0, "an empty buffer holds no memory");
        // Given back: the next one taken on this thread is that memory.
        assert!(take(1).capacity() >= POOLED_MIN);
    }
}
