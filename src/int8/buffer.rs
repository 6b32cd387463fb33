//! The byte storage of [`QTensor`](super::QTensor)s, recycled within and between int8 forward
//! passes.
//!
//! Every layer of a pass writes a fresh activation and drops its input. Allocating each one
//! zeroed (`vec![0; n]`) costs a memset of every activation (2–3% of a MobileNetV2 pass at
//! batch 1 on one thread, more on two, where it runs on one thread while the other waits) for
//! bytes the kernels overwrite anyway (every kernel writes all of its output); and a large one
//! comes fresh from the system (glibc maps every block over 32 MiB, and trims others), so each
//! of its pages faults and is zeroed by the kernel on first touch (~10% of a MobileNetV2 pass at
//! batch 32). Inside [`scope`] (which [`on_thread_pool`](super::on_thread_pool) opens around a
//! pass), a dropped [`Buffer`] goes to a free list of this thread and the next request of at
//! most its size takes it back with its old bytes. When the scope closes its list is kept for
//! the next scope, on whichever thread it opens (as onnxruntime's arena keeps its blocks between
//! runs): at most `MAX_FREE` buffers, never more than the pass itself held when it returned.
//! [`release`] frees them. Outside a scope a buffer is a plain zeroed `Vec`.

use std::cell::RefCell;
use std::sync::Mutex;

/// Requests below this many bytes are not worth recycling.
const MIN_RECYCLED: usize = 4096;
/// A recycled buffer is at most this many times the request, so that a small tensor leaving
/// the pass does not hold a large activation's allocation.
const MAX_WASTE: usize = 8;
/// Free buffers kept at once.
const MAX_FREE: usize = 8;

/// The free list of the last scope to close, waiting for the next one to open.
static RETAINED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

thread_local! {
    /// The free list of the [`scope`] open on this thread, if any.
    static FREE: RefCell<Option<Vec<Vec<u8>>>> = const { RefCell::new(None) };
}

/// Runs `f` with buffer recycling on this thread (see the module docs); nested scopes share
/// the outermost's list.
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    scope_keeping(&RETAINED, f)
}

/// Frees the buffers kept between scopes (those of scopes open now stay theirs).
pub fn release() {
    drop(std::mem::take(&mut *lock(&RETAINED)));
}

/// [`scope`], taking its first buffers from `kept` and leaving its list there.
fn scope_keeping<R>(kept: &'static Mutex<Vec<Vec<u8>>>, f: impl FnOnce() -> R) -> R {
    if FREE.with(|free| free.borrow().is_some()) {
        return f();
    }
    struct Close(&'static Mutex<Vec<Vec<u8>>>);
    impl Drop for Close {
        fn drop(&mut self) {
            // On return and on unwind alike. Another scope may have closed meanwhile: keep
            // the largest `MAX_FREE` of both lists.
            let Some(mut list) = FREE.with(|free| free.borrow_mut().take()) else {
                return;
            };
            let mut kept = lock(self.0);
            list.append(&mut kept);
            list.sort_unstable_by_key(|b| std::cmp::Reverse(b.len()));
            list.truncate(MAX_FREE);
            *kept = list;
        }
    }
    let list = std::mem::take(&mut *lock(kept));
    FREE.with(|free| *free.borrow_mut() = Some(list));
    let _close = Close(kept);
    f()
}

/// The list, also after a panic elsewhere (a list of byte buffers has no invariant to break).
fn lock(m: &Mutex<Vec<Vec<u8>>>) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
            let mut free = free.borrow_mut();
            let Some(free) = free.as_mut() else {
                return;
            };
            if free.len() < MAX_FREE {
                free.push(bytes);
            } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.len())
                && smallest.len() < bytes.len()
            {
                // The larger one is the harder to get back from the system.
                *smallest = bytes;
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
    use super::{Buffer, MAX_FREE, MAX_WASTE, MIN_RECYCLED, scope_keeping};
    use std::sync::Mutex;

    /// Inside a scope a dropped buffer's allocation serves the next request that fits (not a
    /// much smaller one); outside one buffers are fresh.
    #[test]
    fn recycles_inside_a_scope() {
        static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
        let n = MIN_RECYCLED * MAX_WASTE * 2;
        scope_keeping(&KEPT, || {
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

    /// A closed scope's list serves the next scope, on another thread too; a full list keeps
    /// the largest buffers.
    #[test]
    fn keeps_the_largest_buffers_between_scopes() {
        static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
        let sizes: Vec<usize> = (1..=MAX_FREE + 2).map(|i| i * MIN_RECYCLED).collect();
        let kept_ptrs: Vec<usize> = scope_keeping(&KEPT, || {
            let buffers: Vec<Buffer> = sizes.iter().map(|&n| Buffer::new(n)).collect();
            buffers.iter().map(|b| b.as_ptr() as usize).collect()
        });
        let mut kept: Vec<usize> = KEPT.lock().unwrap().iter().map(Vec::len).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            sizes[sizes.len() - MAX_FREE..],
            "the largest MAX_FREE"
        );
        let largest = *sizes.last().unwrap();
        let again = std::thread::spawn(move || {
            scope_keeping(&KEPT, || Buffer::new(largest).as_ptr() as usize)
        })
        .join()
        .unwrap();
        assert_eq!(again, *kept_ptrs.last().unwrap(), "the largest, taken back");
    }
}
