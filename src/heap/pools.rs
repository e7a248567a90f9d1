//! The object headers of pymalloc's pools, read in bulk.
//!
//! A GC list links objects in the order they survived collections, which on a long-running
//! heap (objects freed here and there, holes filled by later allocations) has little to do
//! with where they are in memory. Following it through a block cache then reads each part of
//! the heap many times over: on a real library heap of 400 MB, 6 GB in 96,000 reads. But
//! nearly every GC object is small and lives in a pymalloc pool: a POOL_SIZE-aligned run of
//! equal-size blocks whose header says the block size and how much of the pool is in use. So
//! the pools are read once, in address order and large pieces, and the header of every block
//! that looks like a tracked GC object is kept in a compact index; the walk then follows the
//! lists through the index and reads from the target only what is not in it (objects larger
//! than pymalloc serves, and objects that moved since the index was read).
//!
//! Pools are recognised by their own invariants (a valid size class, and a last-block offset
//! that follows from it exactly), not by the allocator's globals, so this works on stripped
//! static builds too. Nothing here is trusted: an entry is a hint the walk checks the way it
//! checks what it reads from the target (links must point back).

use crate::cpython::layout::Layout;
use crate::cpython::layout::{GC_LINK_FLAG_BITS, PoolLayout};
use crate::memory::live::direct_read;
use crate::memory::maps::MemoryMap;
use crate::memory::{ReadInto, RemoteMemory, u32_at, u64_at};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes read from the target per request while scanning.
const SCAN_PIECE: usize = 2 << 20;
/// Scans of fewer bytes than this run on one thread.
const PARALLEL_ABOVE: u64 = 32 << 20;
/// The index holds at most this many bytes per byte of the target's resident memory, so
/// that leakspy stays a fraction of the process it reads.
const MAX_INDEX_FRACTION: f64 = 0.16;
/// Bytes per entry (the index's arrays: the header and its successor).
const ENTRY_BYTES: u64 = 22;
/// A successor that is not in the index.
const NOT_INDEXED: u32 = u32::MAX;
/// Addresses above this do not fit the index's 48-bit links (none do on x86_64 Linux).
const MAX_LINK: u64 = (1 << 48) - 1;

/// An object header as the scan saw it: the PyGC_Head links and the object's type and
/// refcount word, keyed by the PyGC_Head's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedHeader {
    pub next: u64,
    pub prev: u64,
    pub type_addr: u64,
    /// The refcount word's low 32 bits: all of it up to 3.11 for any count that fits (no real
    /// count exceeds it), and all that 3.12+ read of it (the immortal bit lives there).
    pub refcnt_low: u32,
    /// Which entry of the index this is (0 to `len() - 1`): walks mark entries they have seen
    /// in a bitmap of the index's size instead of a set of addresses.
    pub entry: u32,
}

/// The headers found, by pool. Held compactly (18 bytes an object, in one record so that a
/// lookup touches one cache line, not three): the two links in 48 bits each (user addresses on
/// x86_64 fit, flag bits included), the type as an index into a table of the few thousand
/// types there are, and the refcount word's low half. A pool's entries are
/// found without searching: a bit per block-alignment slot of the pool says which slots have
/// an entry, and the entry is the pool's first plus the number of bits set before it.
#[derive(Debug, Default)]
pub struct ObjectIndex {
    pool_mask: u64,
    /// log2 of the slot size (pymalloc's alignment).
    slot_shift: u32,
    pools: FxHashMap<u64, u32>,
    slots: Vec<PoolSlots>,
    entries: Vec<Entry>,
    /// The entries the other scanning thread found, numbered after `entries`: taken over as
    /// they are, not copied, which would hold both copies at once at leakspy's peak.
    more_entries: Vec<Entry>,
    /// Per entry, the entry its `next` link leads to (`NOT_INDEXED` if none): found for all
    /// entries at once, in address order and on both cores, so that a walk along the lists
    /// goes from entry to entry without looking each address up.
    successors: Vec<u32>,
    type_table: Vec<u64>,
    type_ids: FxHashMap<u64, u16>,
    /// The type the scan found last, and its id.
    last_type: Option<(u64, u16)>,
    /// What building it cost and found, for the census and the benchmark.
    pub stats: IndexStats,
}

/// One indexed header: `next` and `prev` in 6 bytes each, the type's id, the refcount's low
/// half; byte arrays, so that the record is 18 bytes with no padding.
#[derive(Debug, Clone, Copy)]
struct Entry {
    links: [u8; 12],
    type_id: [u8; 2],
    refcnt_low: [u8; 4],
}

impl Entry {
    /// The 48-bit link at byte `at` of `links` (0: next, 6: prev).
    fn link(&self, at: usize) -> u64 {
        self.links[at..at + 6].iter().rev().fold(0u64, |word, &b| word << 8 | u64::from(b))
    }
}

/// Which slots of one pool have an entry (a pool has at most 1,024 slots: 16 KiB of 16-byte
/// slots), and where its entries start.
#[derive(Debug, Clone, Copy, Default)]
struct PoolSlots {
    first: u32,
    bits: [u64; 16],
    /// Entries in the words before each word.
    before: [u16; 16],
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    pub bytes_scanned: u64,
    /// Reads made to scan.
    pub reads: u64,
    /// Of the scan, the reads and bytes another thread made (not counted by the memory
    /// source, which only sees its own).
    pub reads_elsewhere: u64,
    pub bytes_elsewhere: u64,
    pub pools: u64,
    pub entries: u64,
    /// The index stopped growing at its memory bound.
    pub full: bool,
}

impl ObjectIndex {
    /// Scans the target's private anonymous memory for pools and indexes their objects'
    /// headers; `None` when the layout has no pool data or the source is a copy (whose reads
    /// are local already).
    pub fn build(mem: &mut dyn RemoteMemory, layout: &Layout, maps: &MemoryMap, rss: u64) -> Option<ObjectIndex> {
        let pools = layout.pools.as_ref()?;
        if !mem.changes_under_reads() {
            return None;
        }
        let anonymous: Vec<(u64, u64)> = maps
            .mappings
            .iter()
            .filter(|m| m.readable && m.writable && !m.shared && !m.is_file() && !m.path.starts_with("[v"))
            .map(|m| (m.start, m.end))
            .collect();
        // Whole pools around what the target wrote: a pool whose blocks are not all handed out
        // has pages never touched at its end (they read as zeros), and is still a pool.
        let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
        for (start, end) in anonymous {
            let found = mem.populated_runs(start, end).unwrap_or_else(|| std::iter::once(start..end).collect());
            for run in found {
                let pools_start = (run.start & !(pools.pool_size - 1)).max(start);
                let pools_end = run.end.next_multiple_of(pools.pool_size).min(end);
                match runs.last_mut() {
                    Some(last) if last.end >= pools_start => last.end = last.end.max(pools_end),
                    _ => runs.push(pools_start..pools_end),
                }
            }
        }
        // Entries both threads may still add, shared so that an uneven split wastes none.
        let room = AtomicU64::new(((rss as f64 * MAX_INDEX_FRACTION) as u64 / ENTRY_BYTES).max(1 << 16));
        let total: u64 = runs.iter().map(|r| r.end - r.start).sum();
        // Room reserved up front for about as many entries as the bytes hold objects (real
        // heaps hold one GC object per 150-250 bytes): growing by doubling would copy the
        // entries and fault their pages in twice. Untouched reserved pages cost nothing.
        let expected = (total / 128).min(room.load(Ordering::Relaxed)) as usize;
        let empty = |reserve: usize| ObjectIndex {
            pool_mask: !(pools.pool_size - 1),
            slot_shift: pools.alignment.trailing_zeros(),
            entries: Vec::with_capacity(reserve),
            ..ObjectIndex::default()
        };
        // Two threads, each scanning half the bytes, where the source can be read from another
        // thread and there is enough to share: reading is most of the work.
        let pid = mem.direct_reads().filter(|_| total >= PARALLEL_ABOVE);
        let (mine, theirs) = match pid {
            Some(_) => split_runs(&runs, total / 2, pools.pool_size),
            None => (runs, Vec::new()),
        };
        let (mut index, other) = std::thread::scope(|scope| {
            let (room, theirs) = (&room, &theirs);
            let other = pid.map(|pid| {
                scope.spawn(move || {
                    let mut index = empty(expected / 2);
                    let mut read = |addr: u64, buf: &mut [u8]| direct_read(pid, addr, buf);
                    index.scan_runs(theirs, layout, pools, room, &mut read).map(|()| index)
                })
            });
            let mut index = empty(if pid.is_some() { expected / 2 } else { expected });
            let mine = index.scan_runs(&mine, layout, pools, room, &mut |addr, buf| mem.read_bulk(addr, buf));
            (mine.map(|()| index), other.map(|t| t.join().ok().flatten()))
        });
        if let Some(index) = index.as_mut() {
            // If the other half could not be read, what this half indexed still serves.
            if let Some(Some(other)) = other {
                index.absorb(other);
            }
            index.stats.entries = index.len() as u64;
            index.link_successors(pid.is_some());
        }
        index
    }

    /// Fills `successors`, on two threads when `parallel`. The lookups are independent of
    /// each other, so the processor overlaps their cache misses, which a walk (each address
    /// known only once the previous object is read) cannot.
    fn link_successors(&mut self, parallel: bool) {
        let mut successors = vec![NOT_INDEXED; self.len()];
        let this = &*self;
        let fill = |first: usize, out: &mut [u32]| {
            for (k, successor) in out.iter_mut().enumerate() {
                let Some(entry) = this.entry((first + k) as u32) else { continue };
                *successor = this.entry_of(entry.link(0) & !GC_LINK_FLAG_BITS).unwrap_or(NOT_INDEXED);
            }
        };
        let half = if parallel { successors.len() / 2 } else { successors.len() };
        let (mine, theirs) = successors.split_at_mut(half);
        std::thread::scope(|scope| {
            if !theirs.is_empty() {
                scope.spawn(|| fill(half, theirs));
            }
            fill(0, mine);
        });
        self.successors = successors;
    }

    /// Scans `runs` (pool-aligned) into this index, stopping when `room` runs out; `None` if the
    /// target cannot be read at all (gone, denied).
    fn scan_runs(
        &mut self,
        runs: &[std::ops::Range<u64>],
        layout: &Layout,
        pools: &PoolLayout,
        room: &AtomicU64,
        read: &mut ReadInto,
    ) -> Option<()> {
        let mut scanner = Scanner::new(layout, pools);
        let mut buf = vec![0u8; SCAN_PIECE];
        for run in runs {
            // Pieces start on pool boundaries, so that no pool is cut in two.
            let mut at = run.start.next_multiple_of(pools.pool_size);
            while at + pools.pool_size <= run.end {
                let len = ((run.end - at) as usize).min(SCAN_PIECE) & !(pools.pool_size as usize - 1);
                let n = match read(at, &mut buf[..len]) {
                    Ok(n) => n,
                    Err(e) if e.is_torn() => 0,
                    Err(_) => return None,
                };
                self.stats.bytes_scanned += n as u64;
                self.stats.reads += 1;
                let before = self.len();
                scanner.scan(&buf[..n], at, self);
                let added = (self.len() - before) as u64;
                if room.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(added)).is_err() {
                    self.stats.full = true;
                    return Some(());
                }
                // Past what was read; a short read skips the pool that stopped it.
                at += (n as u64 / pools.pool_size + u64::from(n < len)) * pools.pool_size;
            }
        }
        Some(())
    }

    /// Takes in an index built over other pools (by another thread).
    fn absorb(&mut self, other: ObjectIndex) {
        let type_ids: Vec<Option<u16>> = other
            .type_table
            .iter()
            .map(|&addr| match self.type_ids.get(&addr) {
                Some(&id) => Some(id),
                None if self.type_table.len() <= usize::from(u16::MAX) => {
                    let id = self.type_table.len() as u16;
                    self.type_table.push(addr);
                    self.type_ids.insert(addr, id);
                    Some(id)
                }
                None => None,
            })
            .collect();
        // A type this index has no room for: the other pools' objects are left to the walk's
        // reads (dropped whole, so that ranks stay right).
        if type_ids.iter().any(Option::is_none) {
            return;
        }
        let (first_slot, first_entry) = (self.slots.len() as u32, self.entries.len() as u32);
        self.pools.extend(other.pools.into_iter().map(|(pool, slot)| (pool, slot + first_slot)));
        self.slots.extend(other.slots.into_iter().map(|s| PoolSlots { first: s.first + first_entry, ..s }));
        let mut more = other.entries;
        for e in &mut more {
            e.type_id = type_ids[usize::from(u16::from_le_bytes(e.type_id))].unwrap_or(0).to_le_bytes();
        }
        self.more_entries = more;
        self.stats.bytes_scanned += other.stats.bytes_scanned;
        self.stats.reads += other.stats.reads;
        self.stats.reads_elsewhere += other.stats.reads;
        self.stats.bytes_elsewhere += other.stats.bytes_scanned;
        self.stats.pools += other.stats.pools;
        self.stats.full |= other.stats.full;
    }

    pub fn get(&self, gc_addr: u64) -> Option<IndexedHeader> {
        self.header(self.entry_of(gc_addr)?)
    }

    /// The entry the object whose `next` is `entry`'s leads to: `Some(None)` when that object
    /// is not in the index, `None` when `entry` is not an entry.
    pub fn successor(&self, entry: u32) -> Option<Option<u32>> {
        let successor = *self.successors.get(entry as usize)?;
        Some((successor != NOT_INDEXED).then_some(successor))
    }

    /// Asks the processor to bring entry `k`'s record and successor into its cache, for a
    /// use a little later: the walk overlaps the next object's cache misses with its work on
    /// the current one so.
    pub fn prefetch(&self, k: u32) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(entry), Some(successor)) = (self.entry(k), self.successors.get(k as usize)) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: a prefetch only hints the cache; both pointers are into our own slices.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>((entry as *const Entry).cast());
                _mm_prefetch::<_MM_HINT_T0>((successor as *const u32).cast());
            }
        }
    }

    pub fn header(&self, k: u32) -> Option<IndexedHeader> {
        let entry = self.entry(k)?;
        Some(IndexedHeader {
            next: entry.link(0),
            prev: entry.link(6),
            type_addr: *self.type_table.get(usize::from(u16::from_le_bytes(entry.type_id)))?,
            refcnt_low: u32::from_le_bytes(entry.refcnt_low),
            entry: k,
        })
    }

    fn entry_of(&self, gc_addr: u64) -> Option<u32> {
        let pool = gc_addr & self.pool_mask;
        let slots = &self.slots[*self.pools.get(&pool)? as usize];
        let slot = ((gc_addr - pool) >> self.slot_shift) as usize;
        let (word, bit) = (slot / 64, slot % 64);
        let bits = *slots.bits.get(word)?;
        if (gc_addr - pool) & ((1 << self.slot_shift) - 1) != 0 || bits & (1 << bit) == 0 {
            return None;
        }
        Some(slots.first + u32::from(slots.before[word]) + (bits & ((1 << bit) - 1)).count_ones())
    }

    /// Starts the entries of the pool at `pool`; `push` adds to it, in address order.
    fn begin_pool(&mut self, pool: u64) {
        self.pools.insert(pool, self.slots.len() as u32);
        self.slots.push(PoolSlots { first: self.entries.len() as u32, ..PoolSlots::default() });
    }

    /// Drops the pool begun last if nothing was added to it, else counts the entries before
    /// each word of its slot bits.
    fn end_pool(&mut self, pool: u64) {
        match self.slots.last_mut() {
            Some(s) if s.first as usize == self.entries.len() => {
                self.slots.pop();
                self.pools.remove(&pool);
            }
            Some(s) => {
                let mut before = 0u16;
                for (word, bits) in s.before.iter_mut().zip(s.bits) {
                    *word = before;
                    before += bits.count_ones() as u16;
                }
            }
            None => {}
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len() + self.more_entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry(&self, k: u32) -> Option<&Entry> {
        let k = k as usize;
        match k.checked_sub(self.entries.len()) {
            None => self.entries.get(k),
            Some(more) => self.more_entries.get(more),
        }
    }

    /// Adds a header to the pool begun last; false (nothing added) if it does not fit the
    /// compact form.
    fn push(&mut self, pool: u64, gc: u64, header: IndexedHeader) -> bool {
        // Neighbouring blocks are often of one type: the last one found is tried first.
        let type_id = match self.last_type {
            Some((addr, id)) if addr == header.type_addr => id,
            _ => match self.type_ids.get(&header.type_addr) {
                Some(&id) => id,
                None if self.type_table.len() <= usize::from(u16::MAX) => {
                    let id = self.type_table.len() as u16;
                    self.type_table.push(header.type_addr);
                    self.type_ids.insert(header.type_addr, id);
                    id
                }
                None => return false,
            },
        };
        self.last_type = Some((header.type_addr, type_id));
        let slot = ((gc - pool) >> self.slot_shift) as usize;
        let Some(slots) = self.slots.last_mut() else { return false };
        if header.next > MAX_LINK || header.prev > MAX_LINK || slot >= 64 * slots.bits.len() {
            return false;
        }
        slots.bits[slot / 64] |= 1 << (slot % 64);
        let mut links = [0u8; 12];
        links[..6].copy_from_slice(&header.next.to_le_bytes()[..6]);
        links[6..].copy_from_slice(&header.prev.to_le_bytes()[..6]);
        self.entries.push(Entry { links, type_id: type_id.to_le_bytes(), refcnt_low: header.refcnt_low.to_le_bytes() });
        true
    }
}

/// `runs` cut in two at about `bytes` (on a pool boundary): the first part and the rest.
fn split_runs(
    runs: &[std::ops::Range<u64>],
    bytes: u64,
    pool_size: u64,
) -> (Vec<std::ops::Range<u64>>, Vec<std::ops::Range<u64>>) {
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    let mut left = bytes;
    for run in runs {
        let len = run.end - run.start;
        if left >= len {
            first.push(run.clone());
            left -= len;
        } else if left > 0 {
            let cut = (run.start + left).next_multiple_of(pool_size).min(run.end);
            first.push(run.start..cut);
            rest.push(cut..run.end);
            left = 0;
        } else {
            rest.push(run.clone());
        }
    }
    (first, rest)
}

/// Largest malloc chunk taken for a plausible one by [`Allocations::extent`].
const MAX_CHUNK: u64 = 64 << 20;

/// What pymalloc's pools (and malloc's chunk headers) say of an address that only a word
/// found in memory says is an object (a conservative scan's, or a stale or torn reference's):
/// where objects start, and how far the allocation it is in goes. Each pool's header is read
/// once.
pub struct Allocations {
    /// The interpreter's pool layout, and the other block alignment of 3.6 and 3.7 builds
    /// (8, or 16 where the 3.8 change was backported, as in pyenv's 3.6.15 and 3.7.16): a pool
    /// is a pool under either, its header says which.
    scanners: Vec<Scanner>,
    /// Offsets in a block where an object may start.
    offsets: Vec<u64>,
    /// Per pool read: its block size and the end of its carved blocks, or None (not a pool in
    /// use, or unreadable).
    pools: FxHashMap<u64, Option<(u64, u64)>>,
    /// The pool of the address asked about last: addresses come in runs in one pool.
    last: Option<(u64, Option<(u64, u64)>)>,
}

/// A pool's header is 48 bytes on 64-bit builds.
const MAX_POOL_HEADER: usize = 64;

impl Allocations {
    pub fn new(layout: &Layout) -> Allocations {
        let mut scanners = Vec::new();
        let mut offsets = vec![0];
        if let Some(p) = &layout.pools {
            scanners.push(Scanner::new(layout, p));
            if p.alignment != 16 {
                scanners.push(Scanner::new(layout, &PoolLayout { alignment: 16, ..p.clone() }));
            }
            offsets.extend(scanners[0].gc_starts.iter().map(|&skip| skip + scanners[0].gc_head_size as u64));
        }
        Allocations { scanners, offsets, pools: FxHashMap::default(), last: None }
    }

    /// The pool `addr` would be in, and its block size and carved end if it is one in use.
    fn pool(&mut self, mem: &mut dyn RemoteMemory, addr: u64) -> Option<(u64, Option<(u64, u64)>)> {
        let scanner = self.scanners.first()?;
        let (pool_size, header_size) = (scanner.pool_size, scanner.header_size);
        let pool = addr & !(pool_size - 1);
        if let Some((last, used)) = self.last
            && last == pool
        {
            return Some((pool, used));
        }
        let scanners = &self.scanners;
        let used = *self.pools.entry(pool).or_insert_with(|| {
            let mut header = [0u8; MAX_POOL_HEADER];
            let header = header.get_mut(..header_size as usize)?;
            mem.read(pool, header).ok()?;
            scanners.iter().find_map(|s| {
                let size = s.used_pool(header, pool)?;
                Some((size, u64::from(u32_at(header, s.nextoffset)).min(pool_size)))
            })
        });
        self.last = Some((pool, used));
        Some((pool, used))
    }

    /// Whether an object may start at `addr`, whose first word (at the block's start when it
    /// is the object's) is `first_word`. In a pool in use: at a block (or a GC header's end,
    /// or past a pre-header and a GC header), in the part handed out so far, and not on the
    /// free list (a block whose first word links to another of its pool). Without this, a
    /// pointer into the middle of a block reads the bytes there as an object: a heap type's
    /// `tp_name` points at its name's characters, and whatever follows them in the next block
    /// (a list's item array starting with a type) made a `time.struct_time` of 80 MB; a freed
    /// str, its refcount now the free list's link, counted with that link's low half as its
    /// refcount. Addresses outside pools (malloc's, static objects) pass: nothing here tells
    /// their starts.
    pub fn allows(&mut self, mem: &mut dyn RemoteMemory, addr: u64, first_word: u64) -> bool {
        let Some((pool, Some((block_size, carved)))) = self.pool(mem, addr) else { return true };
        let (pool_size, header_size) = (self.scanners[0].pool_size, self.scanners[0].header_size);
        let Some(offset) = (addr - pool).checked_sub(header_size) else { return false };
        let within = offset % block_size;
        let block = pool + header_size + offset - within;
        let free_link = first_word == 0 || (pool + header_size..pool + pool_size).contains(&first_word);
        block - pool < carved && self.offsets.contains(&within) && !(within == 0 && free_link)
    }

    /// How many bytes from `addr` to the end of the allocation it is in, when that can be
    /// told: a block of a pymalloc pool in use (the pool's header says the block size), or a
    /// glibc malloc chunk (the size word before it, 16-aligned and plausible). `None`
    /// otherwise: memory whose extent is not known is not searched.
    pub fn extent(&mut self, mem: &mut dyn RemoteMemory, addr: u64) -> Option<u64> {
        if let Some((pool, Some((size, _)))) = self.pool(mem, addr)
            && let Some(offset) = (addr - pool).checked_sub(self.scanners[0].header_size)
        {
            return Some(size - offset % size);
        }
        if !addr.is_multiple_of(16) {
            return None;
        }
        let word = mem.read_u64(addr - 8).ok()?;
        let size = word & !7;
        (size >= 32 && size.is_multiple_of(16) && size <= MAX_CHUNK).then_some(size - 8)
    }

    /// Bytes held by the pools looked at.
    pub fn heap_bytes(&self) -> u64 {
        (self.pools.capacity() * 32) as u64
    }
}

/// What the scan needs to know of this interpreter's layout, precomputed.
struct Scanner {
    pool_size: u64,
    alignment: u64,
    size_classes: u32,
    header_size: u64,
    count: usize,
    freeblock: usize,
    szidx: usize,
    nextoffset: usize,
    maxnextoffset: usize,
    /// Where a block's PyGC_Head may start: at the block, and from 3.11 also two words in,
    /// after a managed dict's pointers (types with the pre-header flag).
    gc_starts: Vec<u64>,
    gc_head_size: usize,
    ob_refcnt: usize,
    ob_type: usize,
    /// Free blocks of the pool being scanned, by block number.
    free: Vec<bool>,
}

impl Scanner {
    fn new(layout: &Layout, p: &PoolLayout) -> Scanner {
        let mut gc_starts = vec![0];
        if layout.sizes.preheader_flags.is_some() {
            gc_starts.push(16);
        }
        Scanner {
            pool_size: p.pool_size,
            alignment: p.alignment,
            size_classes: (p.small_request_threshold / p.alignment) as u32,
            header_size: p.header_size,
            count: p.count,
            freeblock: p.freeblock,
            szidx: p.szidx,
            nextoffset: p.nextoffset,
            maxnextoffset: p.maxnextoffset,
            gc_starts,
            gc_head_size: layout.gc_head.size,
            ob_refcnt: layout.object.ob_refcnt,
            ob_type: layout.object.ob_type,
            free: Vec::new(),
        }
    }

    /// Indexes the pools in `data` (which starts at `base`, a pool boundary).
    fn scan(&mut self, data: &[u8], base: u64, index: &mut ObjectIndex) {
        let pool_size = self.pool_size as usize;
        for (k, pool) in data.chunks_exact(pool_size).enumerate() {
            let pool_addr = base + (k * pool_size) as u64;
            if let Some(block_size) = self.used_pool(pool, pool_addr) {
                index.begin_pool(pool_addr);
                self.index_blocks(pool, pool_addr, block_size, index);
                index.end_pool(pool_addr);
                index.stats.pools += 1;
            }
        }
    }

    /// The block size of a pool in use, if `pool` is one: its size class is valid, its last
    /// block's offset is exactly what that class gives, it has handed out at least one block
    /// and no more than fit, and its free list points inside it.
    fn used_pool(&self, pool: &[u8], pool_addr: u64) -> Option<u64> {
        let szidx = u32_at(pool, self.szidx);
        if szidx >= self.size_classes {
            return None;
        }
        let size = (u64::from(szidx) + 1) * self.alignment;
        let (next_offset, max_next) =
            (u64::from(u32_at(pool, self.nextoffset)), u64::from(u32_at(pool, self.maxnextoffset)));
        let count = u64::from(u32_at(pool, self.count));
        let capacity = (self.pool_size - self.header_size) / size;
        let free = u64_at(pool, self.freeblock);
        let plausible = max_next == self.pool_size - size
            && next_offset >= self.header_size
            && next_offset <= max_next + size
            && (1..=capacity).contains(&count)
            && (free == 0 || (pool_addr + self.header_size..pool_addr + self.pool_size).contains(&free));
        plausible.then_some(size)
    }

    /// Adds the header of every block handed out and not on the pool's free list that looks
    /// like a tracked GC object: a nonzero, aligned `_gc_next`, and an aligned type pointer.
    fn index_blocks(&mut self, pool: &[u8], pool_addr: u64, size: u64, index: &mut ObjectIndex) {
        let carved = u64::from(u32_at(pool, self.nextoffset)).min(self.pool_size);
        let blocks = ((carved.saturating_sub(self.header_size)) / size) as usize;
        self.free.clear();
        self.free.resize(blocks, false);
        // The free list threads through the pool's own blocks; a loop or a stray link ends it.
        let mut free = u64_at(pool, self.freeblock);
        for _ in 0..blocks {
            let Some(offset) = free.checked_sub(pool_addr + self.header_size) else { break };
            if offset % size != 0 || offset / size >= blocks as u64 || self.free[(offset / size) as usize] {
                break;
            }
            self.free[(offset / size) as usize] = true;
            free = u64_at(pool, (free - pool_addr) as usize);
        }
        let header_len = (self.gc_head_size + self.ob_refcnt.max(self.ob_type) + 8) as u64;
        for block in (0..blocks).filter(|&b| !self.free[b]) {
            let block_start = self.header_size + block as u64 * size;
            for &skip in &self.gc_starts {
                if skip + header_len > size {
                    continue;
                }
                let at = (block_start + skip) as usize;
                let next = u64_at(pool, at);
                let type_addr = u64_at(pool, at + self.gc_head_size + self.ob_type);
                let masked = next & !GC_LINK_FLAG_BITS;
                if masked < 0x1000 || masked & 7 != 0 || type_addr < 0x1000 || type_addr & 7 != 0 {
                    continue;
                }
                index.push(
                    pool_addr,
                    pool_addr + block_start + skip,
                    IndexedHeader {
                        next,
                        prev: u64_at(pool, at + 8),
                        type_addr,
                        refcnt_low: u32_at(pool, at + self.gc_head_size + self.ob_refcnt),
                        entry: 0,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpython::layout::candidate_layouts;
    use crate::memory::ReadError;

    const BASE: u64 = 0x7f00_0000_0000;

    /// A running process's memory made of one anonymous mapping of bytes.
    struct Image(Vec<u8>);

    impl RemoteMemory for Image {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
            let at = addr.checked_sub(BASE).ok_or(ReadError::Unmapped { addr, len: buf.len() })? as usize;
            let bytes = self.0.get(at..at + buf.len()).ok_or(ReadError::Unmapped { addr, len: buf.len() })?;
            buf.copy_from_slice(bytes);
            Ok(())
        }
    }

    fn put(image: &mut [u8], at: u64, word: u64) {
        let at = (at - BASE) as usize;
        image[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }

    fn put32(image: &mut [u8], at: u64, word: u32) {
        let at = (at - BASE) as usize;
        image[at..at + 4].copy_from_slice(&word.to_le_bytes());
    }

    /// The header of a pool in use at `pool`: blocks of `size`, `carved` of them handed out
    /// so far, `count` in use, the free list starting at `free`. Returns its blocks' address.
    fn put_pool(
        image: &mut [u8],
        p: &PoolLayout,
        pool: u64,
        size: u64,
        carved: u64,
        count: u32,
        free: u64,
    ) -> impl Fn(u64) -> u64 + use<> {
        put32(image, pool + p.szidx as u64, (size / p.alignment - 1) as u32);
        put32(image, pool + p.maxnextoffset as u64, (p.pool_size - size) as u32);
        put32(image, pool + p.nextoffset as u64, (p.header_size + carved * size) as u32);
        put32(image, pool + p.count as u64, count);
        put(image, pool + p.freeblock as u64, free);
        let first = pool + p.header_size;
        move |k| first + k * size
    }

    #[test]
    fn pools_are_found_and_their_gc_blocks_indexed_free_ones_not() {
        let layout = candidate_layouts(11, 7).unwrap().remove(0);
        let p = layout.pools.clone().unwrap();
        let mut image = vec![0u8; 3 * p.pool_size as usize];
        // Pool 1 (the second pool-size run): 64-byte blocks, five handed out, block 2 freed.
        let pool = BASE + p.pool_size;
        let size = 64u64;
        let block = put_pool(&mut image, &p, pool, size, 5, 4, pool + p.header_size + 2 * size);
        let ty = 0x5555_0000_1000;
        for k in 0..5 {
            // A GC head linked to the next block, then refcount and type.
            put(&mut image, block(k), block(k + 1));
            put(&mut image, block(k) + 8, block(k).wrapping_sub(size));
            put(&mut image, block(k) + 16 + layout.object.ob_refcnt as u64, 7 + k);
            put(&mut image, block(k) + 16 + layout.object.ob_type as u64, ty);
        }
        // Block 4 is not a GC object: its first word is a small number (a refcount).
        put(&mut image, block(4), 3);
        // The freed block's first word links the free list (to nothing).
        put(&mut image, block(2), 0);
        // Pool 0 is noise that must not pass: a size class whose last offset does not fit.
        put32(&mut image, BASE + p.szidx as u64, 3);
        put32(&mut image, BASE + p.maxnextoffset as u64, 1234);
        let maps = MemoryMap::anonymous(BASE, BASE + image.len() as u64);
        let index = ObjectIndex::build(&mut Image(image), &layout, &maps, 1 << 30).unwrap();
        assert_eq!(index.stats.pools, 1);
        for k in [0, 1, 3] {
            let h = index.get(block(k)).unwrap_or_else(|| panic!("block {k}"));
            assert_eq!((h.next, h.type_addr, h.refcnt_low), (block(k + 1), ty, 7 + k as u32));
            assert_eq!(h.prev, block(k).wrapping_sub(size));
        }
        assert_eq!(index.get(block(2)), None, "on the free list");
        assert_eq!(index.get(block(4)), None, "not a GC object");
        assert_eq!(index.get(block(0) + 8), None, "not a block start");
        assert_eq!(index.get(BASE + 64), None, "not a pool");
        // Each entry knows the entry its next link leads to: block 0 leads to block 1; block
        // 1 to the freed block 2, and block 3 to block 4, neither of which is indexed.
        let entry = |k: u64| index.get(block(k)).map(|h| h.entry).unwrap();
        assert_eq!(index.successor(entry(0)), Some(Some(entry(1))));
        assert_eq!(index.successor(entry(1)), Some(None));
        assert_eq!(index.successor(entry(3)), Some(None));
        assert_eq!(index.header(entry(1)), index.get(block(1)));
        assert_eq!(index.successor(99), None, "not an entry");
    }

    #[test]
    fn objects_start_only_at_blocks_in_use_of_a_pool_and_extend_to_their_end() {
        for layout in [candidate_layouts(14, 0).unwrap().remove(0), candidate_layouts(7, 0).unwrap().remove(0)] {
            let p = layout.pools.clone().unwrap();
            let gc = layout.gc_head.size as u64;
            let mut image = vec![0u8; 2 * p.pool_size as usize];
            // Pool 1: 48-byte blocks, four carved, block 2 freed (the end of the free list)
            // and block 1 freed before it (its link leads to block 2).
            let pool = BASE + p.pool_size;
            let size = 48u64;
            let block = put_pool(&mut image, &p, pool, size, 4, 2, pool + p.header_size + size);
            put(&mut image, block(1), block(2));
            let mut mem = Image(image);
            let mut allocations = Allocations::new(&layout);
            let mut allows = |addr: u64, first_word: u64| allocations.allows(&mut mem, addr, first_word);
            assert!(allows(block(0), 1), "a block's start, a refcount first");
            assert!(allows(block(3) + gc, block(0)), "a GC object after its header");
            assert!(!allows(block(0) + 40, 1), "inside a block: a str's characters");
            assert!(!allows(block(1), block(2)), "on the free list: its first word a link");
            assert!(!allows(block(4), 1), "not carved yet");
            assert!(!allows(pool + 8, 1), "the pool's header");
            assert!(allows(BASE + 64, 1), "not a pool: nothing known");
            // The extent of an allocation: to its block's end in a pool; unknown in the header
            // of a pool or outside one without a plausible malloc chunk size before it.
            assert_eq!(allocations.extent(&mut mem, block(0) + 40), Some(8));
            assert_eq!(allocations.extent(&mut mem, block(3)), Some(size));
            assert_eq!(allocations.extent(&mut mem, pool + 8), None);
            assert_eq!(allocations.extent(&mut mem, BASE + 64), None);
        }
    }
}
