//! The byte storage of [`QTensor`](super::QTensor)s, recycled within an int8 forward pass.
//!
//! Every layer of a pass writes a fresh activation and drops its input. Allocating each one
//! zeroed (`vec![0; n]`) costs a memset of every activation (2–3% of a MobileNetV2 pass at
//! batch 1 on one thread, more on two, where it runs on one thread while the other waits) for
//! bytes the kernels overwrite anyway (every kernel writes all of its output).
//! Inside [`scope`] (which [`on_thread_pool`](super::on_thread_pool) opens around a pass),
//! a dropped [`Buffer`] goes to a free list of this thread and the next request of at most its
//! size takes it back with its old bytes. The list dies with the scope, so a pass keeps no
//! memory after it returns. Outside a scope a buffer is a plain zeroed `Vec`.

use std::cell::RefCell;

/// Requests below this many bytes are not worth recycling.
const MIN_RECYCLED: usize = 4096;
/// A recycled buffer is at most this many times the request, so that a small tensor leaving
/// the pass does not hold a large activation's allocation.
const MAX_WASTE: usize = 8;
/// Free buffers kept at once.
const MAX_FREE: usize = 8;

thread_local! {
    /// The free list of the [`scope`] open on this thread, if any.
    static FREE: RefCell<Option<Vec<Vec<u8>>>> = const { RefCell::new(None) };
}

/// Runs `f` with buffer recycling on this thread (see the module docs); nested scopes share
/// the outermost's list.
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    if FREE.with(|free| free.borrow().is_some()) {
        return f();
    }
    struct Close;
    impl Drop for Close {
        fn drop(&mut self) {
            // Frees the list's buffers, on return and on unwind alike.
            FREE.with(|free| free.borrow_mut().take());
        }
    }
    FREE.with(|free| *free.borrow_mut() = Some(Vec::new()));
    let _close = Close;
    f()
}

/// `len` initialized bytes, the storage of a [`QTensor`](super::QTensor). Its bytes are
/// whatever was there before (zeros when freshly allocated): writers overwrite all of them.
pub struct Buffer {
    /// Every byte initialized; `len` of them are the buffer's, the rest are spare capacity
    /// for the next user of the allocation.
    bytes: Vec<u8>,
    len: usize,
}

impl Buffer {
    /// A buffer of `len` bytes, recycled when a scope is open and holds one that fits.
    pub fn new(len: usize) -> Self {
        let recycled = if len < MIN_RECYCLED {
            None
        } else {
            FREE.with(|free| {
                let mut free = free.borrow_mut();
                let free = free.as_mut()?;
                let fits = |b: &Vec<u8>| (len..=len.saturating_mul(MAX_WASTE)).contains(&b.len());
                let best = (0..free.len())
                    .filter(|&i| fits(&free[i]))
                    .min_by_key(|&i| free[i].len())?;
                Some(free.swap_remove(best))
            })
        };
        Buffer {
            bytes: recycled.unwrap_or_else(|| vec![0; len]),
            len,
        }
    }

    /// Wraps `bytes` as they are.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Buffer { bytes, len }
    }

    /// The bytes as a `Vec` of length `len` (kept out of any free list).
    pub fn into_vec(mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.truncate(self.len);
        bytes
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.bytes.len() < MIN_RECYCLED {
            return;
        }
        let bytes = std::mem::take(&mut self.bytes);
        // `try_with`: a buffer dropped while the thread's locals are torn down just frees.
        let _ = FREE.try_with(|free| {
            if let Some(free) = free.borrow_mut().as_mut()
                && free.len() < MAX_FREE
            {
                free.push(bytes);
            }
        });
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        Buffer::from_vec(self.to_vec())
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::{Buffer, MAX_WASTE, MIN_RECYCLED, scope};

    /// Inside a scope a dropped buffer's allocation serves the next request that fits (not a
    /// much smaller one), and lists do not outlive their scope.
    #[test]
    fn recycles_inside_a_scope_only() {
        let n = MIN_RECYCLED * MAX_WASTE * 2;
        scope(|| {
            let mut a = Buffer::new(n);
            a.fill(7);
            let at = a.as_ptr();
            drop(a);
            let b = Buffer::new(n / 2);
            assert_eq!((b.as_ptr(), b.len()), (at, n / 2));
            assert!(b.iter().all(|&v| v == 7), "old bytes, not zeroed");
            drop(b);
            assert_ne!(
                Buffer::new(n / MAX_WASTE / 2).as_ptr(),
                at,
                "a much smaller request"
            );
            assert_ne!(
                Buffer::new(MIN_RECYCLED - 1).as_ptr(),
                at,
                "too small to recycle"
            );
            assert_eq!(
                Buffer::new(n).as_ptr(),
                at,
                "the full length is still there"
            );
        });
        let mut a = Buffer::new(n);
        a.fill(7);
        drop(a);
        let b = Buffer::new(n);
        assert!(
            b.iter().all(|&v| v == 0),
            "outside a scope buffers are fresh"
        );
    }
}
