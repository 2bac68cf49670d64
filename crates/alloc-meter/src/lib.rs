//! A global allocator wrapper that keeps, per thread, the net number of bytes allocated (bytes
//! allocated minus bytes freed by that thread), so that a piece of code can be charged for
//! everything it holds while it runs: hookrelay's script budget reads [`thread_net_bytes`]
//! from Rhai's progress callback.
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: alloc_meter::Metered<alloc_meter::Mimalloc> = alloc_meter::Metered(alloc_meter::Mimalloc);
//! ```
//!
//! [`Mimalloc`] is mimalloc as a `GlobalAlloc` that takes its unaligned entry points for the
//! alignments every mimalloc block has anyway (see its docs).
//!
//! The cost is one thread-local add per allocation, reallocation and free: no atomic, no shared
//! cache line. A block freed by another thread than the one that allocated it counts against
//! the freeing thread, so only differences taken on one thread mean anything.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
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

/// mimalloc, through `mi_malloc`, `mi_zalloc` and `mi_realloc` when the alignment asked for is at
/// most a word's, which every mimalloc block has (block sizes are whole words), and through the
/// `_aligned` entry points otherwise. The `mimalloc` crate's allocator always takes the aligned
/// ones, whose extra checks cost about 2,000 instructions per event on the router's path
/// (docs/performance.md, ninth round).
#[derive(Debug, Default, Clone, Copy)]
pub struct Mimalloc;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: mimalloc's functions return blocks of at least the size asked for, aligned to a word at
// least, or null; the aligned ones to the alignment asked for. Every block is freed or resized by
// the mimalloc that allocated it.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls with a size and a power-of-two alignment.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's guarantee).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's guarantee).
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
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

    #[test]
    fn mimalloc_blocks_have_the_alignment_asked_and_keep_their_bytes() {
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1usize, 3, 8, 12, 24, 40, 100, 1000, 70_000, 3 << 20] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; every block is freed once, with its layout.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null() && p as usize % align == 0, "{size} bytes aligned to {align}");
                    std::ptr::write_bytes(p, 0xa5, size);
                    let q = Mimalloc.realloc(p, layout, size * 2 + 5);
                    assert!(!q.is_null() && q as usize % align == 0, "{size} bytes resized, aligned to {align}");
                    assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0xa5), "resizing kept the bytes");
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 2 + 5, align).unwrap());
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert!(!z.is_null() && z as usize % align == 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0), "zeroed");
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
