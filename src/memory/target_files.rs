//! Opening files the target names: the python executable or libpython it has mapped.
//!
//! leakspy runs as root and the target may not be trusted: a compromised worker, a container.
//! Its mount namespace, its file names and every file inside its root are its to choose. A
//! plain `open("/proc/PID/root" + path)` lets it pick what root on the host opens:
//! - an absolute symlink inside the container resolves against the *host's* root once opened
//!   through /proc/PID/root (the kernel only re-roots the magic link itself, not what the
//!   path walk meets after it), so `/usr/lib/libpython3.11.so -> /etc/shadow` is read by root,
//!   and an error message quoting its size or ELF complaints leaks host information;
//! - a FIFO in place of the library blocks `open` until a writer comes: a cron run hangs;
//! - a device node is opened by root, with whatever side effects opening has;
//! - a path that names a file replaced on disk (a package upgrade under a running service)
//!   yields the new file, not the one the process runs, and its symbols are garbage for it.
//!
//! So: the file the process actually maps (/proc/PID/map_files) comes first, and the path is
//! only a fallback, resolved inside the target's root and never out of it. Whatever is found
//! is first held as an `O_PATH` descriptor, which opens nothing, and only a regular file of
//! sane size is then opened for reading, through that very descriptor: a FIFO or a device is
//! refused before it is ever opened, and nothing can be swapped in between check and open.
//! Errors name the path as the target sees it and what was wrong with it, never a host path.

use super::maps::Mapping;
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest file leakspy maps. A libpython with its symbols is 20-30 MB; a "library" of
/// many gigabytes is someone making leakspy map (and its ELF parser walk) something else.
pub const MAX_FILE_SIZE: u64 = 1 << 30;

/// How many symbolic links one lookup may follow: the kernel's own limit (MAXSYMLINKS), which
/// is also what openat2 applies, so both ways of resolving agree.
const MAX_SYMLINK_HOPS: u32 = 40;

/// How often openat2 is retried when it reports a concurrent rename or mount (EAGAIN) before
/// the lookup is done component by component instead.
const OPENAT2_ATTEMPTS: u32 = 3;

/// A regular file of the target's, opened for reading and no larger than `MAX_FILE_SIZE`.
#[derive(Debug)]
pub struct TargetFile {
    file: File,
    len: u64,
}

impl TargetFile {
    /// `len` bytes at `offset`, within the size the file had when it was checked. Read, not
    /// mapped: the target can truncate its own file in place at any moment, and a mapping of
    /// it would then fault (SIGBUS) in the middle of parsing; a read just comes back short,
    /// which is an error here.
    pub fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = offset.checked_add(len).filter(|&end| end <= self.len);
        if end.is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a range past the end of the file"));
        }
        let mut buf = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut buf, offset)?;
        Ok(buf)
    }

    /// The size the file had when it was checked.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Device, inode, size and modification time (ns): what tells one file, as it is now,
    /// from any other, so that what was parsed of it once can be reused.
    pub fn identity(&self) -> io::Result<(u64, u64, u64, i128)> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata()?;
        Ok((
            meta.dev(),
            meta.ino(),
            meta.size(),
            i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ))
    }
}

/// A file of the target's that leakspy would not (or could not) open.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TargetFileError {
    /// The path as the target sees it.
    pub path: String,
    pub reason: Refusal,
}

/// What was wrong with a file. None of these quotes what a link pointed to or anything found
/// outside the target's root: the user learns what to look at in the target, the target
/// learns nothing about the host.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("not a regular file (it is {0})")]
    NotRegular(&'static str),
    #[error("larger than {} GiB", MAX_FILE_SIZE >> 30)]
    TooLarge,
    #[error("escapes the target's root")]
    EscapesRoot,
    #[error("too many levels of symbolic links, or a link into /proc")]
    TooManyLinks,
    #[error(
        "replaced on disk since the target mapped it, and the mapped file cannot be opened through \
         /proc/PID/map_files ({0}; that needs CAP_SYS_ADMIN)"
    )]
    Replaced(io::Error),
    #[error("cannot be opened, neither as mapped (/proc/PID/map_files: {mapped}) nor by path ({by_path})")]
    Unopenable { mapped: io::Error, by_path: io::Error },
    #[error("cannot be opened: {0}")]
    Io(io::Error),
}

/// Opens the file behind `mapping` in process `pid`: the mapped file itself when
/// /proc/PID/map_files allows it (root with CAP_SYS_ADMIN), else the mapping's path resolved
/// inside the target's root. A mapping the kernel marks ` (deleted)` is never opened by path:
/// whatever has that name now is not what the process runs.
pub fn open_mapped(pid: i32, mapping: &Mapping) -> Result<TargetFile, TargetFileError> {
    let (path, deleted) = match mapping.path.strip_suffix(" (deleted)") {
        Some(path) => (path, true),
        None => (mapping.path.as_str(), false),
    };
    let map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end);
    // Following this magic link is the point: it leads to the mapped inode, wherever it is.
    let mapped_error = match open_o_path(Path::new(&map_files), 0) {
        Ok(fd) => return open_checked(fd).map_err(|reason| TargetFileError { path: path.to_string(), reason }),
        Err(e) => e,
    };
    if deleted {
        return Err(TargetFileError { path: path.to_string(), reason: Refusal::Replaced(mapped_error) });
    }
    let root = format!("/proc/{pid}/root");
    let inside = path_inside_root(&root, path);
    open_in_root(Path::new(&root), inside).map_err(|e| match e.reason {
        Refusal::Io(by_path) => {
            TargetFileError { path: e.path, reason: Refusal::Unopenable { mapped: mapped_error, by_path } }
        }
        _ => e,
    })
}

/// Opens `path` (absolute, as the target sees it) inside the directory `root` (for a live
/// target /proc/PID/root), following symlinks only within it: an absolute link target starts
/// again at `root`, and `..` never climbs above it.
pub fn open_in_root(root: &Path, path: &str) -> Result<TargetFile, TargetFileError> {
    open_in_root_with(root, path, resolve_in_root)
}

/// A way to find `path` under a root directory: `resolve_in_root`, or `walk_in_root` alone.
type Resolver = fn(&OwnedFd, &str) -> Result<OwnedFd, Refusal>;

fn open_in_root_with(root: &Path, path: &str, resolve: Resolver) -> Result<TargetFile, TargetFileError> {
    let refused = |reason| TargetFileError { path: path.to_string(), reason };
    // The root itself is ours to name (a /proc magic link): it is followed on purpose.
    let root = open_o_path(root, libc::O_DIRECTORY).map_err(|e| refused(Refusal::Io(e)))?;
    let found = resolve(&root, path).map_err(refused)?;
    open_checked(found).map_err(refused)
}

/// /proc/PID/maps names files relative to *our* root. For a target chrooted into a directory
/// we can see, that is the host path (/srv/jail/usr/lib/libpython3.so); inside its root the
/// same file is /usr/lib/libpython3.so. Targets in their own mount namespace (containers)
/// already show their own paths, and their root reads as "/".
fn path_inside_root<'a>(root_link: &str, path: &'a str) -> &'a str {
    let Ok(root) = std::fs::read_link(root_link) else { return path };
    let Some(root) = root.to_str() else { return path };
    if root == "/" {
        return path;
    }
    match path.strip_prefix(root) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Resolves with openat2's RESOLVE_IN_ROOT, which does in the kernel what `walk_in_root` does
/// by hand (and is immune to renames racing the walk), falling back to the walk where the
/// kernel (before 5.6) or a seccomp filter (container runtimes) does not offer openat2: such
/// filters answer ENOSYS, older ones (Docker before 20.10) EPERM, which an O_PATH lookup
/// never returns on its own.
fn resolve_in_root(root: &OwnedFd, path: &str) -> Result<OwnedFd, Refusal> {
    for _ in 0..OPENAT2_ATTEMPTS {
        match openat2_in_root(root, path) {
            Ok(fd) => return Ok(fd),
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM) => return walk_in_root(root, path),
                Some(libc::EAGAIN) => continue,
                Some(libc::EXDEV) => return Err(Refusal::EscapesRoot),
                Some(libc::ELOOP) => return Err(Refusal::TooManyLinks),
                _ => return Err(Refusal::Io(e)),
            },
        }
    }
    walk_in_root(root, path)
}

/// `struct open_how` of linux/openat2.h (libc's is non-exhaustive, so it cannot be built).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// An `O_PATH` descriptor for `path` under `root`, symlinks followed but clamped to `root`,
/// and no /proc magic links (a container's /proc/1/root/... would leave its root).
fn openat2_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let name = c_path(path)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `name` is NUL-terminated and `how` is a valid open_how of the size passed; the
    // kernel only reads both.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(fd as libc::c_int)
}

/// Resolves `path` under `root` one component at a time, each opened `O_PATH|O_NOFOLLOW` so
/// that the kernel never follows a link for us. A symlink's target is read and walked from
/// the directory that holds it, or from `root` if absolute; `..` pops the directories walked
/// so far and stops at `root`. The result is never outside `root`, whatever the links say.
fn walk_in_root(root: &OwnedFd, path: &str) -> Result<OwnedFd, Refusal> {
    // Directories below the root, innermost last: where we are and how to go back up.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut pending: VecDeque<Vec<u8>> = components(path.as_bytes()).collect();
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == b".." {
            dirs.pop();
            continue;
        }
        let here = dirs.last().unwrap_or(root);
        let fd = openat_no_follow(here, &name).map_err(Refusal::Io)?;
        match file_type(&fd).map_err(Refusal::Io)? {
            libc::S_IFLNK => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Refusal::TooManyLinks);
                }
                let target = read_link(&fd).map_err(Refusal::Io)?;
                if target.first() == Some(&b'/') {
                    dirs.clear();
                }
                for part in components(&target).rev() {
                    pending.push_front(part);
                }
            }
            libc::S_IFDIR => dirs.push(fd),
            _ if pending.is_empty() => return Ok(fd),
            _ => return Err(Refusal::Io(io::Error::from_raw_os_error(libc::ENOTDIR))),
        }
    }
    Err(Refusal::NotRegular("a directory"))
}

/// The names in a path, without empty ones and `.` (which change nothing).
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec)
}

/// Checks what an `O_PATH` descriptor refers to and only then opens it for reading, through
/// /proc/self/fd so that the inode checked is the inode opened. Non-blocking and without
/// becoming our controlling terminal, even though only regular files get this far.
fn open_checked(found: OwnedFd) -> Result<TargetFile, Refusal> {
    check_regular(&stat(&found).map_err(Refusal::Io)?)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", found.as_raw_fd()))
        .map_err(Refusal::Io)?;
    let len = file.metadata().map_err(Refusal::Io)?.len();
    // Same inode, so still a regular file; but it may have grown since.
    if len > MAX_FILE_SIZE {
        return Err(Refusal::TooLarge);
    }
    Ok(TargetFile { file, len })
}

fn check_regular(st: &libc::stat) -> Result<(), Refusal> {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG if st.st_size as u64 > MAX_FILE_SIZE => return Err(Refusal::TooLarge),
        libc::S_IFREG => return Ok(()),
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        _ => "of an unknown kind",
    };
    Err(Refusal::NotRegular(kind))
}

/// An `O_PATH` descriptor: a handle on an inode that opens nothing (no FIFO wait, no device
/// open), good for fstat, for walking from, and for reopening once checked.
fn open_o_path(path: &Path, extra_flags: libc::c_int) -> io::Result<OwnedFd> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_PATH | extra_flags).open(path)?;
    Ok(OwnedFd::from(file))
}

fn openat_no_follow(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is NUL-terminated; the returned descriptor is checked and then owned.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    owned(fd)
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned to us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer; fstat works on O_PATH descriptors.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn file_type(fd: &OwnedFd) -> io::Result<libc::mode_t> {
    Ok(stat(fd)?.st_mode & libc::S_IFMT)
}

/// The target of the symlink an `O_PATH|O_NOFOLLOW` descriptor holds (readlinkat with an
/// empty name reads the descriptor's own link).
fn read_link(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

fn c_path(path: &str) -> io::Result<CString> {
    CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Both ways of resolving: the kernel's (openat2, where this kernel has it) and the walk
    /// used where it has not. Each test holds for both.
    const RESOLVERS: [(&str, Resolver); 2] = [("openat2", resolve_in_root), ("walk", walk_in_root)];

    /// A scratch directory with a fake target root in it and a "host" directory beside it,
    /// standing for the host files a hostile root would like leakspy to open.
    struct Scratch {
        dir: PathBuf,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("leakspy-target-files-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("root/usr/lib")).unwrap();
            std::fs::create_dir_all(dir.join("host")).unwrap();
            std::fs::write(dir.join("host/secret"), b"host secret").unwrap();
            Scratch { dir }
        }

        fn root(&self) -> PathBuf {
            self.dir.join("root")
        }

        /// The host file's absolute path, which is also the name a link inside the root uses.
        fn host_secret(&self) -> PathBuf {
            self.dir.join("host/secret")
        }

        /// `path` (absolute, as the target sees it) where it is on disk.
        fn inside(&self, path: &Path) -> PathBuf {
            self.root().join(path.strip_prefix("/").unwrap())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn contents(file: TargetFile) -> Vec<u8> {
        file.read_at(0, file.size()).unwrap()
    }

    /// Opens `path` under `root` with each resolver; never waits more than 2 s for either.
    fn open_each(root: &Path, path: &str) -> Vec<(&'static str, Result<TargetFile, TargetFileError>)> {
        RESOLVERS
            .iter()
            .map(|&(name, resolve)| {
                let (tx, rx) = mpsc::channel();
                let (root, asked) = (root.to_path_buf(), path.to_string());
                std::thread::spawn(move || {
                    let _ = tx.send(open_in_root_with(&root, &asked, resolve));
                });
                let result = rx
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or_else(|_| panic!("{name}: opening {path} blocked for more than 2 s"));
                (name, result)
            })
            .collect()
    }

    #[test]
    fn a_regular_file_is_opened() {
        let s = Scratch::new("regular");
        std::fs::write(s.root().join("usr/lib/libpython3.11.so"), b"\x7fELF...").unwrap();
        for (how, result) in open_each(&s.root(), "/usr/lib/libpython3.11.so") {
            assert_eq!(contents(result.unwrap_or_else(|e| panic!("{how}: {e}"))), b"\x7fELF...", "{how}");
        }
    }

    #[test]
    fn a_file_truncated_in_place_reads_short_not_a_crash() {
        // A target may truncate its own library while leakspy parses it: with a mapping that
        // would be SIGBUS; reads must come back as an error instead.
        let s = Scratch::new("truncated");
        let path = s.root().join("usr/lib/libpython3.11.so");
        std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
        let file = open_in_root(&s.root(), "/usr/lib/libpython3.11.so").unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
        assert_eq!(file.read_at(0, 100).unwrap(), vec![7u8; 100]);
        assert!(file.read_at(0, 1 << 16).is_err());
        assert!(file.read_at(1 << 15, 8).is_err());
        assert!(file.read_at(u64::MAX - 2, 8).is_err(), "past the checked size");
    }

    #[test]
    fn an_absolute_symlink_stays_inside_the_root() {
        let s = Scratch::new("absolute");
        symlink(s.host_secret(), s.root().join("usr/lib/libpython3.11.so")).unwrap();
        for (how, result) in open_each(&s.root(), "/usr/lib/libpython3.11.so") {
            let e = result.map(contents).expect_err(how);
            let message = e.to_string();
            assert!(message.starts_with("/usr/lib/libpython3.11.so: "), "{how}: {message}");
            assert!(!message.contains(s.dir.to_str().unwrap()), "{how}: names a host path: {message}");
            assert!(matches!(e.reason, Refusal::Io(ref io) if io.kind() == io::ErrorKind::NotFound), "{how}: {e}");
        }
        // The same link, with the file it names present inside the root: that one is opened.
        let re_rooted = s.inside(&s.host_secret());
        std::fs::create_dir_all(re_rooted.parent().unwrap()).unwrap();
        std::fs::write(&re_rooted, b"inside").unwrap();
        for (how, result) in open_each(&s.root(), "/usr/lib/libpython3.11.so") {
            assert_eq!(contents(result.unwrap_or_else(|e| panic!("{how}: {e}"))), b"inside", "{how}");
        }
    }

    #[test]
    fn dot_dot_never_climbs_above_the_root() {
        let s = Scratch::new("dotdot");
        // From root/usr/lib, ten levels up is far above the scratch directory on the host.
        let climb = format!("{}{}", "../".repeat(10), s.host_secret().to_str().unwrap().trim_start_matches('/'));
        symlink(&climb, s.root().join("usr/lib/libpython3.11.so")).unwrap();
        let asked = format!("/../../../..{}", s.host_secret().display());
        for path in ["/usr/lib/libpython3.11.so", asked.as_str()] {
            for (how, result) in open_each(&s.root(), path) {
                assert!(result.is_err(), "{how}: {path} opened the host's file");
            }
        }
        let re_rooted = s.inside(&s.host_secret());
        std::fs::create_dir_all(re_rooted.parent().unwrap()).unwrap();
        std::fs::write(&re_rooted, b"inside").unwrap();
        for path in ["/usr/lib/libpython3.11.so", asked.as_str()] {
            for (how, result) in open_each(&s.root(), path) {
                assert_eq!(contents(result.unwrap_or_else(|e| panic!("{how}: {path}: {e}"))), b"inside", "{how}");
            }
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let s = Scratch::new("fifo");
        let fifo = CString::new(s.root().join("usr/lib/libpython3.11.so").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo: {}", io::Error::last_os_error());
        for (how, result) in open_each(&s.root(), "/usr/lib/libpython3.11.so") {
            let e = result.map(contents).expect_err(how);
            assert!(matches!(e.reason, Refusal::NotRegular("a FIFO")), "{how}: {e}");
            assert_eq!(e.to_string(), "/usr/lib/libpython3.11.so: not a regular file (it is a FIFO)");
        }
    }

    #[test]
    fn devices_are_refused() {
        let s = Scratch::new("device");
        // A link to /dev/zero means the root's own /dev/zero: absent here, so nothing opens...
        symlink("/dev/zero", s.root().join("usr/lib/libpython3.11.so")).unwrap();
        for (how, result) in open_each(&s.root(), "/usr/lib/libpython3.11.so") {
            let e = result.map(contents).expect_err(how);
            assert!(
                matches!(e.reason, Refusal::Io(ref io) if io.kind() == io::ErrorKind::NotFound),
                "{how}: the host's /dev/zero was reached: {e}"
            );
        }
        // ...and a device node inside the root (a container with CAP_MKNOD can make one) is
        // refused for what it is.
        std::fs::create_dir_all(s.root().join("dev")).unwrap();
        let node = CString::new(s.root().join("dev/zero").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; 1:5 is /dev/zero.
        if unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) } != 0 {
            println!("cannot make a device node here ({}): only the link was checked", io::Error::last_os_error());
            return;
        }
        for (how, result) in open_each(&s.root(), "/usr/lib/libpython3.11.so") {
            let e = result.map(contents).expect_err(how);
            assert!(matches!(e.reason, Refusal::NotRegular("a character device")), "{how}: {e}");
        }
    }

    #[test]
    fn directories_loops_and_huge_files_are_refused() {
        let s = Scratch::new("odd");
        for (how, result) in open_each(&s.root(), "/usr/lib") {
            assert!(matches!(result.map(contents).expect_err(how).reason, Refusal::NotRegular("a directory")), "{how}");
        }
        symlink("b", s.root().join("usr/lib/a")).unwrap();
        symlink("a", s.root().join("usr/lib/b")).unwrap();
        for (how, result) in open_each(&s.root(), "/usr/lib/a") {
            assert!(matches!(result.map(contents).expect_err(how).reason, Refusal::TooManyLinks), "{how}");
        }
        // Sparse: a size, not a gigabyte of disk.
        let huge = File::create(s.root().join("usr/lib/huge.so")).unwrap();
        huge.set_len(MAX_FILE_SIZE + 1).unwrap();
        for (how, result) in open_each(&s.root(), "/usr/lib/huge.so") {
            let e = result.map(contents).expect_err(how);
            assert!(matches!(e.reason, Refusal::TooLarge), "{how}: {e}");
            assert_eq!(e.to_string(), "/usr/lib/huge.so: larger than 1 GiB");
        }
    }

    #[test]
    fn a_relative_symlink_through_directories_resolves_like_the_kernel() {
        let s = Scratch::new("relative");
        std::fs::create_dir_all(s.root().join("opt/py/lib")).unwrap();
        std::fs::write(s.root().join("opt/py/lib/libpython3.11.so.1.0"), b"real").unwrap();
        symlink("../../opt/py/lib/./libpython3.11.so.1.0", s.root().join("usr/lib/libpython3.11.so")).unwrap();
        symlink("/usr/lib", s.root().join("lib")).unwrap();
        for (how, result) in open_each(&s.root(), "/lib//libpython3.11.so") {
            assert_eq!(contents(result.unwrap_or_else(|e| panic!("{how}: {e}"))), b"real", "{how}");
        }
        for (how, result) in open_each(&s.root(), "/usr/lib/libpython3.11.so/x") {
            assert!(result.is_err(), "{how}: a file was walked through as a directory");
        }
    }

    #[test]
    fn chroot_paths_are_made_relative_to_the_root() {
        let s = Scratch::new("chroot");
        let link = s.dir.join("root-link");
        symlink(s.root(), &link).unwrap();
        let host_path = format!("{}/usr/lib/libpython3.11.so", s.root().display());
        assert_eq!(path_inside_root(link.to_str().unwrap(), &host_path), "/usr/lib/libpython3.11.so");
        let elsewhere = format!("{}x/usr/lib/libpython3.11.so", s.root().display());
        assert_eq!(path_inside_root(link.to_str().unwrap(), &elsewhere), elsewhere);
        assert_eq!(path_inside_root("/proc/self/root", "/usr/lib/x.so"), "/usr/lib/x.so");
    }
}
