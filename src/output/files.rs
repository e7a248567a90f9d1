//! The files leakspy writes: `snapshot -o` (replaced whole), `snapshot --append` and
//! `attach --record` (one line appended per census).
//!
//! leakspy runs as root, often from cron, into directories other users may be able to write
//! (a node_exporter textfile directory, /tmp). Whoever can write a directory can put a name in
//! it before leakspy comes: a symbolic link to a file of root's, so that root overwrites it; a
//! file or FIFO of their own, so that the census (command lines, which can hold secrets) lands
//! where they can read it. So here:
//! - every name is reached inside an open directory (`*at` calls on its descriptor), and the
//!   last component is never followed if it is a symbolic link: such a path is refused;
//! - an existing entry that belongs to another user (not leakspy's, not root), in a directory
//!   other users can write, is refused: it may have been planted there. In a directory only leakspy's user can write, a
//!   file owned by someone else was put there on purpose, and its owner and mode are kept;
//! - a regular file is replaced through a temporary file next to it, written unnamed
//!   (O_TMPFILE; where unsupported, created under its random name with O_EXCL, O_NOFOLLOW),
//!   given the old file's owner and mode (0600 for a new file unless `--mode` says otherwise),
//!   flushed, given a random name, renamed over the name, and the directory flushed: a reader
//!   sees the old file or the new one, never half of one;
//! - devices and FIFOs (`/dev/null`, a terminal, a pipe someone reads) and stdout are written
//!   as they are: replacing `/dev/null` with a regular file would break the machine;
//! - an append that fails (a full disk, an I/O error) is cut back to where it began, so a
//!   history never holds a partial line that the next record would be glued to.

use anyhow::{Context, Result, bail};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mode of a file leakspy creates: a census holds command lines, which can hold secrets.
pub const NEW_FILE_MODE: u32 = 0o600;

/// Where `-o` sends its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `-o -`, `-o /dev/stdout`, or no `-o` at all: leakspy's own standard output, written as
    /// it is. `/dev/stdout` is a symbolic link (to /proc/self/fd/1), which leakspy otherwise
    /// refuses; this one well-known name means exactly what `-` does, so it is taken as such.
    Stdout,
    File(PathBuf),
}

impl Destination {
    pub fn from_arg(path: &Path) -> Destination {
        if path.as_os_str() == "-" || path == Path::new("/dev/stdout") {
            Destination::Stdout
        } else {
            Destination::File(path.to_path_buf())
        }
    }
}

/// Parses `--mode`: octal permission bits (`0644`, `644` or `0o644`), no more than 0777: a
/// census file has no use for set-user-ID, set-group-ID or sticky bits.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("{text:?} is not an octal mode such as 0600"))?;
    if digits.is_empty() || mode > 0o777 {
        return Err(format!("{text:?} is not a permission mode between 0000 and 0777"));
    }
    Ok(mode)
}

/// Writes `contents` to `dest`: stdout and devices as they are, a regular file replaced
/// atomically. `mode` sets the permissions of a regular file written (default: the replaced
/// file's, or 0600 for a new one).
pub fn write_output(dest: &Destination, contents: &[u8], mode: Option<u32>) -> Result<()> {
    write_output_with(dest, mode, &mut |out| out.write_all(contents).map_err(anyhow::Error::from))
}

/// Writes to `dest` what `write` writes, as `write_output` does, for output too large to hold
/// whole (a memory image of gigabytes): streamed into the temporary file, which is renamed
/// over the name only once `write` has returned Ok, so a failed or killed write never leaves
/// a partial file under the name.
pub fn write_output_with(
    dest: &Destination,
    mode: Option<u32>,
    write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let path = match dest {
        Destination::Stdout => {
            let mut out = std::io::stdout().lock();
            write(&mut out).context("writing to stdout")?;
            return out.flush().context("writing to stdout");
        }
        Destination::File(path) => path,
    };
    let place = Place::open(path).with_context(|| format!("creating {}", path.display()))?;
    let existing = place.entry().with_context(|| format!("looking at {}", path.display()))?;
    match existing {
        None => place.replace(None, write, mode.unwrap_or(NEW_FILE_MODE)),
        Some(entry) => {
            place.check_trusted(&entry, true)?;
            if entry.kind == Kind::Regular {
                place.replace(Some(&entry), write, mode.unwrap_or(entry.mode & 0o777))
            } else {
                place.write_directly(&entry, write)
            }
        }
    }
}

/// A file that lines are appended to (a history, a recording): opened once, locked for each
/// line so that concurrent runs never interleave.
pub struct AppendFile {
    file: File,
    path: PathBuf,
}

impl AppendFile {
    /// Opens (creating it, mode 0600, if absent) a regular file for appending. A symbolic
    /// link, a planted file and anything but a regular file are refused: a FIFO would block
    /// the writer forever, a device would swallow the history.
    pub fn open(path: &Path) -> Result<AppendFile> {
        let place = Place::open(path).with_context(|| format!("opening {}", path.display()))?;
        if let Some(entry) = place.entry().with_context(|| format!("looking at {}", path.display()))? {
            place.check_trusted(&entry, false)?;
            if entry.kind != Kind::Regular {
                bail!("{} is {}, not a regular file: a history must be a regular file", path.display(), entry.kind);
            }
        }
        // O_NONBLOCK: should a FIFO appear between the look above and this open, the open
        // fails (no reader) or returns at once instead of waiting for a reader; the fstat
        // below then refuses it.
        let flags = libc::O_WRONLY
            | libc::O_APPEND
            | libc::O_CREAT
            | libc::O_NOFOLLOW
            | libc::O_NONBLOCK
            | libc::O_NOCTTY
            | libc::O_CLOEXEC;
        let fd = open_at(&place.dir, &place.name, flags, NEW_FILE_MODE)
            .with_context(|| format!("opening {}", path.display()))?;
        let entry = Entry::of_fd(fd.as_raw_fd()).with_context(|| format!("looking at {}", path.display()))?;
        if entry.kind != Kind::Regular {
            bail!("{} is {}, not a regular file: a history must be a regular file", path.display(), entry.kind);
        }
        place.check_trusted(&entry, false)?;
        set_blocking(fd.as_raw_fd()).with_context(|| format!("opening {}", path.display()))?;
        Ok(AppendFile { file: File::from(fd), path: path.to_path_buf() })
    }

    /// Appends `line` (one write) and flushes it to disk, under an exclusive lock. If any of
    /// it fails, the file is cut back to the size it had when the lock was taken, so no
    /// partial line is left for the next record to be glued to.
    pub fn append(&mut self, line: &[u8]) -> Result<()> {
        let path = self.path.display();
        let mut file = &self.file;
        let _lock = Lock::exclusive(file).with_context(|| format!("locking {path}"))?;
        // Under the lock every leakspy writer has finished: the end of the file is where this
        // line begins.
        let start = file.metadata().with_context(|| format!("looking at {path}"))?.len();
        let written = file.write_all(line).and_then(|_| file.sync_data());
        let Err(error) = written else { return Ok(()) };
        match file.set_len(start) {
            Ok(()) => {
                let _ = file.sync_data();
                Err(error).with_context(|| format!("appending to {path} failed, and was undone (the file is as it was)"))
            }
            Err(undo) => Err(error).with_context(|| {
                format!("appending to {path} failed, and cutting it back to {start} bytes failed too ({undo}): its last line may be partial")
            }),
        }
    }
}

/// An exclusive flock, released when dropped (and in any case when the file is closed).
struct Lock<'a>(&'a File);

impl<'a> Lock<'a> {
    fn exclusive(file: &'a File) -> std::io::Result<Lock<'a>> {
        loop {
            // SAFETY: flock on a descriptor that `file` keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(file));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking cannot fail in a way that matters here.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// What a directory entry is, in words for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Regular => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
        })
    }
}

/// The parts of a `stat` this module decides on.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    dev: u64,
    ino: u64,
}

impl Entry {
    // The widths of st_nlink, st_dev and st_ino differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &libc::stat) -> Entry {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Directory,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::Regular,
        };
        Entry {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }

    fn of_fd(fd: RawFd) -> std::io::Result<Entry> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes a whole `stat` into the buffer when it returns 0.
        cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
        // SAFETY: initialised by the successful fstat above.
        Ok(Entry::from_stat(unsafe { st.assume_init_ref() }))
    }
}

/// A name inside an open directory. Every later step works on the directory's descriptor, so
/// a directory renamed or swapped half-way cannot send a later step elsewhere.
struct Place {
    dir: File,
    dir_entry: Entry,
    name: CString,
    path: PathBuf,
}

impl Place {
    fn open(path: &Path) -> Result<Place> {
        let name = path
            .file_name()
            .with_context(|| format!("{} does not name a file (it ends in .. or /)", path.display()))?;
        let name = CString::new(name.as_bytes()).context("the file name holds a NUL byte")?;
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir_c = CString::new(dir_path.as_os_str().as_bytes()).context("the directory name holds a NUL byte")?;
        // SAFETY: open with a NUL-terminated path; the descriptor is owned below.
        let fd = cvt(unsafe { libc::open(dir_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })
            .with_context(|| format!("opening directory {}", dir_path.display()))?;
        // SAFETY: a fresh descriptor that nothing else owns.
        let dir = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let dir_entry = Entry::of_fd(dir.as_raw_fd()).with_context(|| format!("looking at {}", dir_path.display()))?;
        Ok(Place { dir, dir_entry, name, path: path.to_path_buf() })
    }

    /// The entry under the name, not following a symbolic link; None if there is none.
    fn entry(&self) -> std::io::Result<Option<Entry>> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstatat on our directory descriptor and a NUL-terminated name; it writes a
        // whole `stat` when it returns 0.
        let rc = unsafe {
            libc::fstatat(self.dir.as_raw_fd(), self.name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
        };
        match cvt(rc) {
            // SAFETY: initialised by the successful fstatat above.
            Ok(_) => Ok(Some(Entry::from_stat(unsafe { st.assume_init_ref() }))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True if users other than leakspy's own (and root) can create or rename entries in the
    /// directory, and so could have put something under the name before leakspy came.
    fn others_can_write(&self) -> bool {
        !trusted(self.dir_entry.uid) || self.dir_entry.mode & 0o022 != 0
    }

    /// Refuses to write through a symbolic link, or into (or take the owner and mode of) what
    /// another user may have planted. `stdout_hint`: say that `-o -` is stdout (for `-o`, where
    /// a link such as /dev/stderr may have been meant as a stream).
    fn check_trusted(&self, entry: &Entry, stdout_hint: bool) -> Result<()> {
        let path = self.path.display();
        if entry.kind == Kind::Symlink {
            let to = std::fs::read_link(&self.path).map(|t| format!(" (to {})", t.display())).unwrap_or_default();
            let hint = if stdout_hint { "; for stdout, use -o -" } else { "" };
            bail!(
                "{path} is a symbolic link{to}: leakspy does not write through symbolic links, which anyone who \
                 can write the directory could have planted; give the path of the file itself (readlink -f {path}){hint}"
            );
        }
        if !self.others_can_write() {
            return Ok(());
        }
        let me = euid();
        if !trusted(entry.uid) {
            bail!(
                "{path} belongs to user {} (leakspy runs as {me}) in a directory other users can write, so it \
                 may have been planted to read the census: remove it (leakspy then creates its own, mode 0600) \
                 or write to a directory only you can write",
                entry.uid
            );
        }
        if entry.kind == Kind::Regular && entry.nlink > 1 {
            bail!(
                "{path} has {} hard links in a directory other users can write, so it may be another file under \
                 a planted name: remove it (leakspy then creates its own) or write to a directory only you can write",
                entry.nlink
            );
        }
        Ok(())
    }

    /// Writes a new file under a random temporary name, gives it `old`'s owner and `mode`,
    /// flushes it, renames it over the name and flushes the directory.
    fn replace(
        &self,
        old: Option<&Entry>,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
        mode: u32,
    ) -> Result<()> {
        let path = self.path.display();
        let mut temp = TempFile::create(self).with_context(|| format!("creating a temporary file for {path}"))?;
        let file = &temp.file;
        {
            let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
            write(&mut buffered).with_context(|| format!("writing {path}"))?;
            buffered.flush().with_context(|| format!("writing {path}"))?;
        }
        if let Some(old) = old {
            let new = Entry::of_fd(file.as_raw_fd()).with_context(|| format!("writing {path}"))?;
            if (new.uid, new.gid) != (old.uid, old.gid) {
                // SAFETY: fchown on a descriptor `temp` keeps open.
                cvt(unsafe { libc::fchown(file.as_raw_fd(), old.uid, old.gid) }).with_context(|| {
                    format!("giving the new {path} the owner of the old one ({}:{})", old.uid, old.gid)
                })?;
            }
        }
        // After fchown, which may clear mode bits; explicit, so the umask does not change it.
        // SAFETY: fchmod on a descriptor `temp` keeps open.
        cvt(unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) })
            .with_context(|| format!("setting the mode of {path} to {mode:04o}"))?;
        file.sync_all().with_context(|| format!("flushing {path}"))?;
        let temp_name = temp.name().with_context(|| format!("naming the temporary file for {path}"))?.as_ptr();
        // SAFETY: renameat within our directory descriptor, both names NUL-terminated.
        cvt(unsafe { libc::renameat(self.dir.as_raw_fd(), temp_name, self.dir.as_raw_fd(), self.name.as_ptr()) })
            .with_context(|| format!("renaming the temporary file to {path}"))?;
        temp.keep();
        // The rename is durable only once the directory is.
        self.dir.sync_all().with_context(|| format!("flushing the directory of {path}"))
    }

    /// Writes to a character device or a FIFO as it is. Never waits for a FIFO's reader: a
    /// cron job would hang.
    fn write_directly(&self, entry: &Entry, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        let path = self.path.display();
        if !matches!(entry.kind, Kind::CharDevice | Kind::Fifo) {
            bail!("{path} is {}: leakspy writes regular files, character devices, FIFOs and stdout (-o -)", entry.kind);
        }
        let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        let fd = open_at(&self.dir, &self.name, flags, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) && entry.kind == Kind::Fifo {
                anyhow::anyhow!("{path} is a FIFO that nobody reads: start its reader first")
            } else {
                anyhow::Error::from(e).context(format!("opening {path}"))
            }
        })?;
        let opened = Entry::of_fd(fd.as_raw_fd()).with_context(|| format!("opening {path}"))?;
        if (opened.dev, opened.ino) != (entry.dev, entry.ino) {
            bail!("{path} changed while leakspy opened it; nothing was written");
        }
        set_blocking(fd.as_raw_fd()).with_context(|| format!("opening {path}"))?;
        let mut file = File::from(fd);
        write(&mut file).with_context(|| format!("writing {path}"))?;
        file.flush().with_context(|| format!("writing {path}"))
    }
}

/// A temporary file next to the destination, removed when dropped unless kept.
///
/// Created unnamed (O_TMPFILE) where the file system allows it, and named only once written,
/// just before the rename: a leakspy killed while writing (SIGKILL, the OOM killer, a
/// multi-gigabyte `dump` on a full disk) leaves nothing behind, the kernel frees the unnamed
/// file. Elsewhere it is created under its random name from the start.
struct TempFile<'a> {
    place: &'a Place,
    /// None while the file is unnamed.
    name: Option<CString>,
    file: File,
    kept: bool,
}

impl<'a> TempFile<'a> {
    /// Creates the file unnamed, or `.NAME.RANDOM.tmp` exclusively, never following a link:
    /// a name planted in advance cannot be guessed, and if one were, the open fails instead of
    /// using it.
    fn create(place: &'a Place) -> std::io::Result<TempFile<'a>> {
        let unnamed = libc::O_WRONLY | libc::O_TMPFILE | libc::O_CLOEXEC;
        if let Ok(fd) = open_at(&place.dir, c".", unnamed, NEW_FILE_MODE) {
            return Ok(TempFile { place, name: None, file: File::from(fd), kept: false });
        }
        let name = TempFile::link(place, &mut |name| {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            open_at(&place.dir, name, flags, NEW_FILE_MODE)
        })?;
        Ok(TempFile { place, name: Some(name.0), file: File::from(name.1), kept: false })
    }

    /// Makes a random name with `make`, again while the name happens to exist.
    fn link<T>(place: &Place, make: &mut dyn FnMut(&CStr) -> std::io::Result<T>) -> std::io::Result<(CString, T)> {
        let mut attempts = 0;
        loop {
            let name = temp_name(place.name.as_bytes(), random_u64()?);
            match make(&name) {
                Ok(made) => return Ok((name, made)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The file's name in the directory, giving an unnamed file its random one.
    fn name(&mut self) -> std::io::Result<&CStr> {
        if self.name.is_none() {
            let fd = self.file.as_raw_fd();
            let dir = self.place.dir.as_raw_fd();
            let proc_path = CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            let (name, ()) = TempFile::link(self.place, &mut |name| {
                // SAFETY: linkat with our descriptors and NUL-terminated names. AT_EMPTY_PATH
                // links the descriptor itself (needs CAP_DAC_READ_SEARCH); /proc/self/fd
                // does it for anyone.
                let rc = unsafe { libc::linkat(fd, c"".as_ptr(), dir, name.as_ptr(), libc::AT_EMPTY_PATH) };
                if rc == 0 {
                    return Ok(());
                }
                // SAFETY: as above.
                cvt(unsafe {
                    libc::linkat(libc::AT_FDCWD, proc_path.as_ptr(), dir, name.as_ptr(), libc::AT_SYMLINK_FOLLOW)
                })
                .map(|_| ())
            })?;
            self.name = Some(name);
        }
        Ok(self.name.as_deref().unwrap_or_default())
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let (false, Some(name)) = (self.kept, &self.name) {
            // SAFETY: unlinkat within our directory descriptor, a NUL-terminated name.
            unsafe { libc::unlinkat(self.place.dir.as_raw_fd(), name.as_ptr(), 0) };
        }
    }
}

/// `.NAME.RANDOM.tmp`, hidden and recognisable, with NAME shortened so that the whole stays
/// within the 255 bytes a file name may have.
fn temp_name(name: &[u8], random: u64) -> CString {
    let mut bytes = Vec::with_capacity(128);
    bytes.push(b'.');
    bytes.extend_from_slice(&name[..name.len().min(200)]);
    bytes.extend_from_slice(format!(".{random:016x}.tmp").as_bytes());
    // The name came from a CString: it has no NUL byte.
    CString::new(bytes).unwrap_or_default()
}

/// 64 bits from the kernel's random source.
fn random_u64() -> std::io::Result<u64> {
    let mut buf = [0u8; 8];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most the given length into the buffer's unfilled part.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(u64::from_ne_bytes(buf))
}

fn open_at(dir: &File, name: &CStr, flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: openat on our directory descriptor and a NUL-terminated name; the descriptor it
    // returns is owned below.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clears O_NONBLOCK, set only so that opening could not wait: writes should wait as usual.
fn set_blocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller keeps open.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) }).map(|_| ())
}

/// Leakspy's own user, and root, who can do anything leakspy could be made to do anyway.
fn trusted(uid: u32) -> bool {
    uid == euid() || uid == 0
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc == -1 { Err(std::io::Error::last_os_error()) } else { Ok(rc) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("leakspy-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn file(path: &Path) -> Destination {
        Destination::File(path.to_path_buf())
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o640"), Ok(0o640));
        assert_eq!(parse_mode("0000"), Ok(0));
        for bad in ["", "0o", "0888", "4755", "rw-r--r--", "-1", "10000"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stdout_names() {
        assert_eq!(Destination::from_arg(Path::new("-")), Destination::Stdout);
        assert_eq!(Destination::from_arg(Path::new("/dev/stdout")), Destination::Stdout);
        assert_eq!(Destination::from_arg(Path::new("./-x")), file(Path::new("./-x")));
        assert_eq!(Destination::from_arg(Path::new("/dev/stderr")), file(Path::new("/dev/stderr")));
    }

    #[test]
    fn temp_names_are_random_and_fit() {
        let a = temp_name(b"leakspy.prom", random_u64().unwrap());
        let b = temp_name(b"leakspy.prom", random_u64().unwrap());
        assert_ne!(a, b);
        assert!(a.to_bytes().starts_with(b".leakspy.prom.") && a.to_bytes().ends_with(b".tmp"));
        assert!(temp_name(&[b'x'; 255], 7).to_bytes().len() <= 255);
    }

    #[test]
    fn replaces_whole_keeps_mode_and_leaves_no_temporaries() {
        let dir = scratch("replace");
        let target = dir.join("out.json");
        write_output(&file(&target), b"one", None).unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o600, "new files are 0600");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_output(&file(&target), b"two", None).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o640, "the old mode is kept");
        write_output(&file(&target), b"three", Some(0o644)).unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o644, "--mode wins");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let err = write_output(&file(&dir.join("missing/x.json")), b"x", None).unwrap_err();
        assert!(format!("{err:#}").contains("creating"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlinks_directories_and_non_regular_histories_are_refused() {
        let dir = scratch("refuse");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = format!("{:#}", write_output(&file(&link), b"x", None).unwrap_err());
        assert!(err.contains("is a symbolic link") && err.contains("-o -"), "{err}");
        let err = format!("{:#}", AppendFile::open(&link).err().unwrap());
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        let err = format!("{:#}", write_output(&file(&dir), b"x", None).unwrap_err());
        assert!(err.contains("is a directory"), "{err}");
        let fifo = dir.join("fifo");
        mkfifo(&fifo);
        let err = format!("{:#}", AppendFile::open(&fifo).err().unwrap());
        assert!(err.contains("FIFO, not a regular file"), "{err}");
        if let Some(null) = null_device(&dir) {
            let err = format!("{:#}", AppendFile::open(&null).err().unwrap());
            assert!(err.contains("character device, not a regular file"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// A private node of the null device (1, 3) in `dir`, where mknod is allowed: tests never
    /// write the machine's /dev/null, which a regression would replace for everyone.
    fn null_device(dir: &Path) -> Option<PathBuf> {
        let path = dir.join("null");
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod with a NUL-terminated path.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } != 0 {
            println!("cannot make a device node here ({}): device case skipped", std::io::Error::last_os_error());
            return None;
        }
        Some(path)
    }

    #[test]
    fn devices_and_fifos_are_written_as_they_are() {
        let dir = scratch("fifo");
        if let Some(null) = null_device(&dir) {
            write_output(&file(&null), b"census", None).unwrap();
            assert!(std::fs::metadata(&null).unwrap().file_type().is_char_device());
        }
        let fifo = dir.join("pipe");
        mkfifo(&fifo);
        let err = format!("{:#}", write_output(&file(&fifo), b"x", None).unwrap_err());
        assert!(err.contains("nobody reads"), "{err}");
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        // The reader's open blocks until a writer comes; retry until it is there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Err(e) = write_output(&file(&fifo), b"census\n", None) {
            assert!(std::time::Instant::now() < deadline, "{e:#}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(reader.join().unwrap(), b"census\n");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_are_whole_lines_in_new_0600_files() {
        let dir = scratch("append");
        let history = dir.join("h.jsonl");
        let mut out = AppendFile::open(&history).unwrap();
        out.append(b"{\"a\":1}\n").unwrap();
        out.append(b"{\"a\":2}\n").unwrap();
        assert_eq!(std::fs::read(&history).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(std::fs::metadata(&history).unwrap().mode() & 0o7777 & !0o600, 0, "at most 0600");
        std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o640)).unwrap();
        AppendFile::open(&history).unwrap().append(b"{\"a\":3}\n").unwrap();
        assert_eq!(std::fs::metadata(&history).unwrap().mode() & 0o7777, 0o640, "appends keep the mode");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
