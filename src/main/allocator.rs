//! The process's global allocator: mimalloc, or the C library's malloc when
//! `LEADLINE_ALLOCATOR=system` (heap profilers such as heaptrack and valgrind see only
//! malloc). Chosen once, at the first allocation, before `main` runs any thread of ours,
//! and never changed: every block is freed by the allocator that made it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{CStr, c_char};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// Which allocator serves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mimalloc,
    System,
}

/// The allocator `LEADLINE_ALLOCATOR` asks for: `system` (any case) for malloc, anything
/// else, or nothing, for mimalloc. Pure, so it is tested without touching the process.
pub fn kind(setting: Option<&[u8]>) -> Kind {
    match setting {
        Some(value) if value.eq_ignore_ascii_case(b"system") => Kind::System,
        _ => Kind::Mimalloc,
    }
}

const UNKNOWN: u8 = 0;
const MIMALLOC: u8 = 1;
const SYSTEM: u8 = 2;
static CHOSEN: AtomicU8 = AtomicU8::new(UNKNOWN);

unsafe extern "C" {
    // The C library's own: std's `env::var_os` allocates, which the allocator cannot.
    fn getenv(name: *const c_char) -> *const c_char;
}

#[inline]
fn chosen() -> u8 {
    match CHOSEN.load(Ordering::Relaxed) {
        UNKNOWN => {
            // SAFETY: a NUL-terminated name; the result is NUL-terminated or null and
            // read at once. The first allocation happens while std sets the process up,
            // before any thread exists, so nothing changes the environment meanwhile;
            // threads that race here later read the same value anyway.
            let value = unsafe {
                let p = getenv(c"LEADLINE_ALLOCATOR".as_ptr());
                (!p.is_null()).then(|| CStr::from_ptr(p).to_bytes())
            };
            let chosen = match kind(value) {
                Kind::Mimalloc => MIMALLOC,
                Kind::System => SYSTEM,
            };
            CHOSEN.store(chosen, Ordering::Relaxed);
            chosen
        }
        known => known,
    }
}

/// Dispatches to the allocator chosen at the first allocation.
pub struct Selected;

// SAFETY: forwards every call to one of two allocators that uphold `GlobalAlloc`, the
// same one for the life of the process (see `chosen`).
unsafe impl GlobalAlloc for Selected {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if chosen() == SYSTEM {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if chosen() == SYSTEM {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if chosen() == SYSTEM {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if chosen() == SYSTEM {
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Kind, kind};

    #[test]
    fn the_allocator_is_mimalloc_unless_system_is_asked_for() {
        for (setting, expected) in [
            (None, Kind::Mimalloc),
            (Some(&b"system"[..]), Kind::System),
            (Some(b"SYSTEM"), Kind::System),
            (Some(b"mimalloc"), Kind::Mimalloc),
            (Some(b""), Kind::Mimalloc),
            (Some(b"jemalloc"), Kind::Mimalloc),
        ] {
            assert_eq!(kind(setting), expected, "{setting:?}");
        }
    }
}
