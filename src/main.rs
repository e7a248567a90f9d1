use clap::Parser;
use leakspy::cli::{Cli, Command, attach, history, install, ps, snapshot, why};
use leakspy::error::LeakspyError;

/// The static binary's allocator. musl's own is built for size, not speed: the heap graph's
/// pass (millions of small and growing allocations) ran about 15 % slower with it than the glibc
/// build (scripts/bench-static.sh). mimalloc is faster for small blocks, but it grows a large
/// block by copying it, where musl (like glibc with `map_large_allocations`) moves the pages
/// with mremap: the graph's arrays reach hundreds of MiB and are grown many times. So small
/// blocks come from mimalloc and large ones from musl.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: SplitAllocator = SplitAllocator;

#[cfg(target_env = "musl")]
struct SplitAllocator;

/// Blocks of this many bytes or more are the system allocator's (mapped on their own by musl).
#[cfg(target_env = "musl")]
const LARGE_BLOCK: usize = 256 << 10;

#[cfg(target_env = "musl")]
// SAFETY: every block is freed or grown by the allocator that made it: which one is decided by
// the layout's size, which Rust passes unchanged to dealloc and realloc.
unsafe impl std::alloc::GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe {
            if layout.size() >= LARGE_BLOCK {
                std::alloc::System.alloc(layout)
            } else {
                mimalloc::MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe {
            if layout.size() >= LARGE_BLOCK {
                std::alloc::System.alloc_zeroed(layout)
            } else {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the block came from the allocator its size selects (see alloc).
        unsafe {
            if layout.size() >= LARGE_BLOCK {
                std::alloc::System.dealloc(ptr, layout)
            } else {
                mimalloc::MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let old_large = layout.size() >= LARGE_BLOCK;
        let new_large = new_size >= LARGE_BLOCK;
        // SAFETY: within one allocator, its own realloc; across the boundary, a new block from
        // the other, the bytes both hold copied, the old block freed by its own allocator.
        unsafe {
            match (old_large, new_large) {
                (true, true) => std::alloc::System.realloc(ptr, layout, new_size),
                (false, false) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

/// Large buffers (the heap graph's arrays, grown as objects are found) are mapped on their own
/// instead of carved from the main heap: glibc's adaptive threshold otherwise moves them into
/// the heap after the first free, where each growth leaves a hole that is never returned, and
/// leakspy's peak memory doubles.
fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() {
    map_large_allocations();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Snapshot(args) => snapshot::run(args),
        Command::Attach(args) => attach::run_attach(args),
        Command::Run(args) => attach::run_program(args),
        Command::Diff(args) => history::run_diff(args),
        Command::Trend(args) => history::run_trend(args),
        Command::Why(args) => why::run(args),
        Command::Ps(args) => ps::run(args),
        Command::Completions(args) => install::run_completions(args),
        Command::Man(args) => install::run_man(args),
    };
    if let Err(e) = result {
        let message = match &e {
            LeakspyError::Other(inner) => format!("{inner:#}"),
            other => other.to_string(),
        };
        // Errors can carry the target's text (the path of a mapped file, a name): nothing in
        // them reaches the terminal raw.
        eprintln!("leakspy: error: {}", leakspy::text::terminal::message(&message));
        std::process::exit(e.exit_code());
    }
}
