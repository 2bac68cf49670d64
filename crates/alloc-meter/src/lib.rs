//! A global allocator wrapper that keeps, per thread, the net number of bytes allocated (bytes
//! allocated minus bytes freed by that thread), so that a piece of code can be charged for
//! everything it holds while it runs: hookrelay's script budget reads [`thread_net_bytes`]
//! from Rhai's progress callback.
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: alloc_meter::Metered<mimalloc::MiMalloc> = alloc_meter::Metered(mimalloc::MiMalloc);
//! ```
//!
//! The cost is one thread-local add per allocation, reallocation and free: no atomic, no shared
//! cache line. A block freed by another thread than the one that allocated it counts against
//! the freeing thread, so only differences taken on one thread mean anything.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    // `const` and without `Drop`: no lazy initialisation and no destructor, so reading it never
    // allocates (which would re-enter the allocator) and never fails, even while a thread exits.
    static NET: Cell<i64> = const { Cell::new(0) };
}

/// Set by the first allocation through [`Metered`]: until then [`thread_net_bytes`] says the
/// process is not metered.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// `A`, metered: install it with `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Metered<A>(pub A);

#[inline(always)]
fn charge(delta: i64) {
    // Read before write: after the first allocation the flag's cache line stays shared.
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    let _ = NET.try_with(|n| n.set(n.get().wrapping_add(delta)));
}

// SAFETY: every call is forwarded unchanged to `A`, which upholds `GlobalAlloc`'s contract; the
// bookkeeping around it neither allocates nor unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Metered<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            charge(layout.size() as i64);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            charge(layout.size() as i64);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.dealloc(ptr, layout) };
        charge(-(layout.size() as i64));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            charge(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// The calling thread's net allocated bytes so far (negative when it freed more than it
/// allocated), or `None` when [`Metered`] is not the global allocator of this program.
pub fn thread_net_bytes() -> Option<i64> {
    INSTALLED.load(Ordering::Relaxed).then(|| NET.try_with(Cell::get).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: Metered<std::alloc::System> = Metered(std::alloc::System);

    #[test]
    fn a_thread_is_charged_for_what_it_holds() {
        let before = thread_net_bytes().expect("installed");
        let v: Vec<u8> = Vec::with_capacity(1 << 20);
        assert_eq!(thread_net_bytes().unwrap() - before, 1 << 20);
        let mut v = v;
        v.reserve_exact(2 << 20);
        assert!(thread_net_bytes().unwrap() - before >= 2 << 20);
        drop(v);
        assert_eq!(thread_net_bytes().unwrap(), before);
        // Another thread's allocations are its own.
        std::thread::spawn(|| std::hint::black_box(vec![0u8; 1 << 20])).join().unwrap();
        assert!(thread_net_bytes().unwrap() - before < 1 << 20);
    }
}
