//! What the allocator has handed out and not had back (glibc's `mallinfo2`), for `/metrics`.
//!
//! Resident memory is a poor sign of a leak: glibc keeps what a burst of sessions made its
//! arenas grow to, so a relay's RSS stays near its high-water mark long after the sessions
//! are gone. The bytes in use fall back when what was allocated is freed; a leak is what
//! keeps them up.

/// The allocator's view of the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUse {
    /// Bytes handed out and not yet freed (arenas and large mapped blocks).
    pub in_use: u64,
    /// Free bytes the allocator holds on to instead of giving them back to the system.
    pub kept_free: u64,
}

/// The heap now, or `None` where the allocator cannot tell (not glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_use() -> Option<HeapUse> {
    // SAFETY: `mallinfo2` takes no arguments and returns a plain struct by value; glibc
    // (2.33 and later) takes each arena's lock while it counts, so it is safe to call from
    // any thread at any time.
    #[allow(unsafe_code)]
    let m = unsafe { libc::mallinfo2() };
    Some(HeapUse {
        in_use: (m.uordblks + m.hblkhd) as u64,
        kept_free: m.fordblks as u64,
    })
}

/// The heap now, or `None` where the allocator cannot tell (not glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_use() -> Option<HeapUse> {
    None
}

/// The heap as Prometheus text (nothing where the allocator cannot tell).
pub fn render() -> String {
    let Some(h) = heap_use() else {
        return String::new();
    };
    format!(
        "# HELP onair_heap_in_use_bytes Bytes the allocator has handed out and not had back.\n# TYPE onair_heap_in_use_bytes gauge\nonair_heap_in_use_bytes {}\n\
         # HELP onair_heap_kept_free_bytes Free bytes the allocator keeps instead of returning them.\n# TYPE onair_heap_kept_free_bytes gauge\nonair_heap_kept_free_bytes {}\n",
        h.in_use, h.kept_free
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn bytes_in_use_rise_with_an_allocation_and_fall_when_it_is_freed() {
        let before = heap_use().expect("glibc").in_use;
        let block = vec![7u8; 64 << 20];
        let during = heap_use().expect("glibc").in_use;
        assert!(during >= before + (60 << 20), "{before} → {during}");
        drop(std::hint::black_box(block));
        let after = heap_use().expect("glibc").in_use;
        assert!(after + (60 << 20) <= during, "{during} → {after}");
        assert!(render().contains("onair_heap_in_use_bytes "));
    }
}
