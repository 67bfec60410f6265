//! The memory generated code reads and writes: runs of floats, 64-byte aligned, readable `NR`
//! floats past their end, filled before first use; large ones on huge pages. A program's
//! tensors ([`crate::program`]) and each pool thread's scratch ([`crate::pool`]) are buffers.

use crate::microkernel::NR;

/// A 64-byte-aligned run of floats, filled with one value, readable `NR` floats past its end:
/// a contraction may read B's rows where they lie in a tensor ([`crate::microkernel`]), whole
/// rows of `NR` floats of which only the first may belong to the tensor.
///
/// A buffer of at least [`HUGE_PAGE`] bytes (the arena of a network's values, large weights)
/// starts on a huge page and asks the kernel to back it with huge pages before it is first
/// written. Kernels stream tensors of megabytes, each of them hundreds of 4 KiB pages, more
/// than the TLB holds: with huge pages resnet_small's training step at batch 64 ran 1.5%
/// faster, and its unfused step 1.6% (the medians of 8 alternating pairs of processes, this
/// code against a plain allocation).
pub(crate) struct Buffer {
    /// Null for an empty buffer (a view's slot, whose memory lies in another buffer).
    start: *mut f32,
    layout: std::alloc::Layout,
}

// The buffer owns its memory alone; what reads and writes it through `pointer` (generated
// code, one pool thread's scratch) keeps out of other writers' way itself.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

/// The size and alignment of a huge page on x86-64 Linux.
const HUGE_PAGE: usize = 2 << 20;

impl Buffer {
    /// `floats` zeros.
    pub(crate) fn zeroed(floats: usize) -> Buffer {
        Buffer::filled(floats, 0.0)
    }

    /// `floats` floats of `value` (and as many past the end as are readable).
    pub(crate) fn filled(floats: usize, value: f32) -> Buffer {
        let bytes = (floats + NR).div_ceil(16) * 64;
        let align = if bytes >= HUGE_PAGE { HUGE_PAGE } else { 64 };
        let layout = std::alloc::Layout::from_size_align(bytes, align)
            .unwrap_or_else(|_| panic!("internal error: a buffer of {bytes} bytes"));
        // SAFETY: `layout` has a nonzero size (at least `NR` floats).
        let start = unsafe { std::alloc::alloc(layout) };
        if start.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        if align == HUGE_PAGE {
            advise_huge_pages(start, bytes);
        }
        let start = start.cast::<f32>();
        // SAFETY: `start` holds `bytes` bytes just allocated, 64-byte aligned; these are its
        // first writes, so the pages they fault in are the huge ones asked for.
        unsafe { std::slice::from_raw_parts_mut(start, bytes / 4) }.fill(value);
        Buffer { start, layout }
    }

    /// A buffer that owns no memory.
    pub(crate) fn empty() -> Buffer {
        Buffer {
            start: std::ptr::null_mut(),
            layout: std::alloc::Layout::new::<()>(),
        }
    }

    pub(crate) fn pointer(&self) -> *mut f32 {
        self.start
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if !self.start.is_null() {
            // SAFETY: allocated in `filled` with this layout, and freed only here.
            unsafe { std::alloc::dealloc(self.start.cast(), self.layout) };
        }
    }
}

/// Asks Linux to back `bytes` bytes from `start` (page-aligned) with transparent huge pages,
/// where the system leaves that to each program (`madvise`, Debian's default). A hint: where it
/// cannot be followed the memory is the same, in small pages.
#[cfg(target_os = "linux")]
fn advise_huge_pages(start: *mut u8, bytes: usize) {
    // SAFETY: the range is memory this process owns; the advice changes no contents.
    unsafe { libc::madvise(start.cast(), bytes, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: *mut u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small buffers and huge-page ones alike are aligned, zeroed up to `NR` floats past their
    /// end, and writable there.
    #[test]
    fn buffers_are_aligned_zeroed_and_readable_past_their_end() {
        for (floats, align) in [
            (1, 64),
            (1000, 64),
            (HUGE_PAGE / 4, HUGE_PAGE),
            (3 << 20, HUGE_PAGE),
        ] {
            let buffer = Buffer::zeroed(floats);
            let start = buffer.pointer();
            assert_eq!(start as usize % align, 0, "{floats} floats");
            // SAFETY: the buffer holds `floats + NR` floats.
            let all = unsafe { std::slice::from_raw_parts_mut(start, floats + NR) };
            assert!(all.iter().all(|&x| x == 0.0), "{floats} floats");
            all.fill(1.0);
            assert_eq!(all[floats + NR - 1], 1.0);
        }
        assert!(Buffer::empty().pointer().is_null());
    }
}
