//! The target's memory map (/proc/PID/maps): which files are loaded where, and which addresses
//! are worth dereferencing at all.

#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    /// MAP_SHARED: other processes may write it too (shared memory, a shared file mapping).
    pub shared: bool,
    pub offset: u64,
    /// The path as the kernel names it to us, or a pseudo-name such as `[heap]`; empty for
    /// anonymous memory. A target in its own mount namespace shows its own paths; one chrooted
    /// into a directory we can see shows our path to the file (/srv/jail/usr/bin/python3).
    pub path: String,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The file name, without a ` (deleted)` suffix the kernel adds when the file was replaced
    /// on disk (an upgrade under a running service).
    pub fn file_name(&self) -> &str {
        let path = self.path.strip_suffix(" (deleted)").unwrap_or(&self.path);
        path.rsplit('/').next().unwrap_or(path)
    }

    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }
}

#[derive(Debug, Clone, Default)]
pub struct MemoryMap {
    /// Sorted by start address (the kernel lists them so).
    pub mappings: Vec<Mapping>,
}

impl MemoryMap {
    pub fn parse(text: &str) -> MemoryMap {
        let mut mappings: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        mappings.sort_by_key(|m| m.start);
        MemoryMap { mappings }
    }

    /// One private writable anonymous mapping from `start` to `end`: the map tests give
    /// memory of their own (see [`crate::memory::anonymous_pages`]).
    #[cfg(test)]
    pub(crate) fn anonymous(start: u64, end: u64) -> MemoryMap {
        let writable =
            Mapping { start, end, readable: true, writable: true, shared: false, offset: 0, path: String::new() };
        MemoryMap { mappings: vec![writable] }
    }

    pub fn read(pid: i32) -> std::io::Result<MemoryMap> {
        Ok(MemoryMap::parse(&std::fs::read_to_string(format!("/proc/{pid}/maps"))?))
    }

    /// Total size of writable mappings: where a Python heap can live.
    pub fn writable_bytes(&self) -> u64 {
        self.mappings.iter().filter(|m| m.writable).map(|m| m.end - m.start).sum()
    }

    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let idx = self.mappings.partition_point(|m| m.end <= addr);
        self.mappings.get(idx).filter(|m| m.contains(addr))
    }

    /// True if `len` bytes at `addr` lie in readable mappings (adjacent mappings count).
    pub fn is_readable(&self, addr: u64, len: u64) -> bool {
        let mut at = addr;
        let end = addr.saturating_add(len);
        while at < end {
            match self.find(at) {
                Some(m) if m.readable => at = m.end,
                _ => return false,
            }
        }
        true
    }
}

fn parse_line(line: &str) -> Option<Mapping> {
    // "start-end perms offset dev inode   path"; the path may contain spaces.
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.starts_with('r'),
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        shared: perms.as_bytes().get(3) == Some(&b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_with_spaces_and_deleted_files() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234                       /usr/bin/python3.11
55d0c0a01000-55d0c0b00000 r-xp 00001000 fd:01 1234                       /usr/bin/python3.11
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f0000100000-7f0000200000 r--p 00000000 fd:01 99   /opt/my app/libpython3.9.so.1.0 (deleted)
";
        let map = MemoryMap::parse(text);
        assert_eq!(map.mappings.len(), 4);
        assert_eq!(map.mappings[0].file_name(), "python3.11");
        assert_eq!(map.mappings[1].offset, 0x1000);
        assert!(map.mappings[2].writable && map.mappings[2].path.is_empty());
        assert_eq!(map.mappings[3].file_name(), "libpython3.9.so.1.0");
        assert!(map.is_readable(0x55d0c0a00ff0, 0x20));
        assert!(!map.is_readable(0x7f0000020ff0, 0x20));
        assert_eq!(map.find(0x7f0000000010).map(|m| m.start), Some(0x7f0000000000));
        assert!(map.find(0x10).is_none());
    }
}
