//! `leakspy dump PID -o FILE`: a memory image of the target, to read later or elsewhere.
//!
//! The target's threads are stopped only while its writable memory is copied (the pause of
//! `snapshot --pause`, with its guarantees: undone by the kernel if leakspy dies, only the
//! pages the target wrote copied). Everything else happens while it runs again: reading the
//! read-only pages leakspy needs, building the ELF core and compressing it. The file is
//! written under a temporary name and renamed over FILE once complete, so a dump that fails
//! or is killed never leaves a partial FILE.

use super::{PAUSE_ATTEMPTS, TargetArgs, census_flaws, hold_pause_for_tests, open_target, take_census_with};
use crate::cpython::binary::WANTED_SYMBOLS;
use crate::cpython::process::{PythonProcess, read_error};
use crate::error::LeakspyError;
use crate::heap::walk::WalkLimits;
use crate::memory::RemoteMemory;
use crate::memory::live::LiveProcess;
use crate::memory::maps::{Mapping, MemoryMap};
use crate::memory::pause::{CopiedMemory, CopyArena, Pause, PieceKind};
use crate::memory::proc_info::{has_exited, hostname, rss_bytes};
use crate::memory::{ReadError, u64_at};
use crate::output::files::{Destination, parse_mode, write_output_with};
use crate::output::image::{
    Chunk, CoreLayout, MAX_SEGMENTS, NT_AUXV, NT_FILE, NT_LEAKSPY, NT_PRPSINFO, NT_PRSTATUS, Note, PF_R, PF_W, PF_X,
    Segment,
};
use crate::text::{human_bytes, terminal};
use anyhow::Context;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The image file to write (replaced atomically; `-` for stdout). Compressed with zstd
    /// unless --no-compress: `zstd -d FILE` gives the plain ELF core that gdb opens.
    #[arg(short, long, value_name = "FILE", required = true)]
    pub output: PathBuf,
    /// Write the plain ELF core (gdb opens it directly), not zstd-compressed.
    #[arg(long)]
    pub no_compress: bool,
    /// Print the report (sizes, pause, timings) as JSON on stdout (on stderr with `-o -`).
    #[arg(long)]
    pub json: bool,
    /// Permissions of the image file, in octal (default: those of the file it replaces, or
    /// 0600 for a new one: an image holds everything the process had in memory).
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,
}

/// What a dump reports, on stderr and with --json.
#[derive(Debug, Serialize)]
pub struct DumpReport {
    pub pid: i32,
    pub python_version: String,
    pub image: String,
    pub compressed: bool,
    /// Bytes of the file written.
    pub image_bytes: u64,
    /// Bytes of the ELF core before compression.
    pub core_bytes: u64,
    pub rss_bytes: Option<u64>,
    pub writable_bytes: u64,
    /// How long the target's threads were stopped.
    pub paused_ms: f64,
    /// Bytes copied while they were.
    pub copied_bytes: u64,
    /// Read-only and unwritten file-backed bytes read after the pause (type names, the
    /// binary's headers and constants).
    pub read_only_bytes: u64,
    pub segments: usize,
    pub threads: usize,
    /// Building, compressing and writing the file, after the pause.
    pub write_ms: f64,
    /// Pauses taken: a copy that showed the target mid-change (a list being relinked, a
    /// collection under way) was taken again.
    pub pauses: u32,
    /// Torn links, broken lists and unreadable objects in the census of the copy written (0:
    /// clean; `None`: the copy could not be read as a whole).
    pub flaws: Option<u64>,
}

/// Zero-filled runs up to this size between two saved pieces of one mapping are written as
/// zeros (what the paused copy reads there) rather than splitting the segment: a fragmented
/// heap would otherwise need more segments than an ELF file can list.
const ZERO_GAP_FILL: u64 = 64 << 10;
/// Of a longer zero run, the bytes saved next to the data on either side (see `group`).
const ZERO_EDGE: u64 = 16 << 10;
/// zstd level: 3 (zstd's default) compresses a Python heap about 4-6x at several hundred
/// MB/s on one core; higher levels gain little on heap data for much more time.
const ZSTD_LEVEL: i32 = 3;
/// Bytes read per request for the pages read after the pause.
const READ_PIECE: usize = 1 << 20;
const PAGE: u64 = 4096;

/// A paused copy and what was read of the target while it was stopped.
struct Taken<'a> {
    copy: CopiedMemory<'a>,
    maps_text: String,
    threads: Vec<(i32, Registers)>,
    paused_ms: f64,
    /// Pauses taken: a copy whose census shows the target mid-change is taken again.
    pauses: u32,
    /// What the census of the copy kept shows of a target caught mid-change (0: clean).
    flaws: u64,
}

/// One pause: the copy, the mappings and the threads' registers as they were while stopped,
/// and how long it lasted (not yet checked: no flaws counted).
fn pause_and_copy(pid: i32, mem: &mut LiveProcess) -> Result<Taken<'_>, LeakspyError> {
    // The destination, allocated and faulted in while the target still runs.
    let arena = CopyArena::prepare(mem, &MemoryMap::read(pid).map_err(|_| LeakspyError::ProcessExited { pid })?);
    let started = Instant::now();
    let frozen = Pause::freeze(pid).map_err(|e| read_error(pid, e))?;
    // The mappings as they are while stopped: none can appear or go until the threads run.
    let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps"));
    let copy = match &maps_text {
        Ok(text) => CopiedMemory::copy(mem, &MemoryMap::parse(text), arena),
        Err(_) => Err(ReadError::ProcessGone),
    };
    // Registers are read while the threads are ours to read (a few microseconds each).
    let threads = thread_registers(pid);
    hold_pause_for_tests();
    drop(frozen);
    let paused_ms = started.elapsed().as_secs_f64() * 1000.0;
    let copy = copy.map_err(|e| read_error(pid, e))?;
    let maps_text = maps_text.map_err(|_| LeakspyError::ProcessExited { pid })?;
    Ok(Taken { copy, maps_text, threads, paused_ms, pauses: 1, flaws: 0 })
}

pub fn run(args: DumpArgs) -> Result<(), LeakspyError> {
    let pid = args.target.resolve()?;
    let destination = Destination::from_arg(&args.output);
    // A destination that cannot be written is said before the target is stopped for nothing.
    // SAFETY: isatty only inspects the descriptor.
    if destination == Destination::Stdout && unsafe { libc::isatty(1) } == 1 {
        return Err(LeakspyError::Usage(
            "-o - writes the image to stdout, which is a terminal: redirect it (> FILE, | ssh ...) or give -o FILE"
                .into(),
        ));
    }
    if let Destination::File(path) = &destination {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(anyhow::anyhow!("cannot write {}: {} is not a directory", path.display(), dir.display()).into());
        }
    }
    let (process, mut mem) = open_target(pid)?;
    let started_at = start_ticks(pid).ok_or(LeakspyError::ProcessExited { pid })?;
    let rss = rss_bytes(pid);

    // The copy is checked as a `--pause` census checks its copy: a thread stopped between
    // the two writes that relink a list, or a collection under way, would leave the image
    // torn for every later reading, so such a copy is taken again (the next pause falls
    // elsewhere), up to the pauses a `--pause` census takes; the last one is kept and its
    // flaws reported.
    let mut pause = 1;
    loop {
        let mut taken = pause_and_copy(pid, &mut mem)?;
        // A target that died during the pause leaves a copy of a process that no longer
        // exists; the user asked for a dump of a running one (and its census would read what
        // is not in the copy from a process that is gone).
        if gone(pid, started_at) {
            return Err(LeakspyError::ProcessExited { pid });
        }
        taken.pauses = pause;
        taken.flaws = match take_census_with(&process, &mut taken.copy, WalkLimits::default(), false) {
            Ok(census) => census_flaws(&census),
            Err(e) if e.is_transient() => u64::MAX,
            Err(e) => return Err(e),
        };
        if taken.flaws == 0 || pause == PAUSE_ATTEMPTS {
            return write_image(&args, &destination, &process, taken, started_at, rss);
        }
        pause += 1;
    }
}

/// The process that was paused has exited, or its PID is another process's now.
fn gone(pid: i32, started_at: u64) -> bool {
    has_exited(pid) || start_ticks(pid) != Some(started_at)
}

/// Writes the image of the copy in `taken` (the target runs again).
fn write_image(
    args: &DumpArgs,
    destination: &Destination,
    process: &PythonProcess,
    taken: Taken,
    started_at: u64,
    rss: Option<u64>,
) -> Result<(), LeakspyError> {
    let pid = process.pid;
    let Taken { mut copy, maps_text, threads, paused_ms, pauses, flaws } = taken;
    let maps = MemoryMap::parse(&maps_text);
    let writing = Instant::now();

    // A target that died during the pause leaves a copy of a process that no longer exists;
    // the user asked for a dump of a running one, and the read-only pages are gone with it.
    if gone(pid, started_at) {
        return Err(LeakspyError::ProcessExited { pid });
    }
    let pieces = saved_pieces(&mut copy, &maps, &maps_text, pid)?;
    let build_id = build_id(&mut copy, process, &maps);
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default();
    let stat = ProcStat::read(pid);
    if gone(pid, started_at) {
        return Err(LeakspyError::ProcessExited { pid });
    }
    let read_only_bytes: u64 = pieces.iter().filter(|p| matches!(p.data, PieceData::Read(_))).map(|p| p.len()).sum();
    let segments = segments(&copy, pieces);

    let identity = Identity::read(pid);
    let root = TargetRoot::read(pid);
    let leakspy_note = LeakspyNote {
        format: 1,
        pid,
        start_time_ticks: started_at,
        exe: root.inside(&identity.exe),
        cmdline: identity.cmdline.clone(),
        host: hostname(),
        dumped_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        python_version: process.version.to_string(),
        version_source: process.version_source,
        binary: root.inside(&process.binary.path),
        binary_build_id: build_id,
        load_bias: process.binary.load_bias,
        symbols: WANTED_SYMBOLS.iter().filter_map(|&name| Some((name, process.binary.symbol(name)?))).collect(),
        rss_bytes: rss.unwrap_or(0),
        writable_bytes: maps.writable_bytes(),
        paused_ms,
        copied_bytes: copy.bytes_copied,
        threads: threads.len(),
        thread_names: threads
            .iter()
            .filter_map(|(tid, _)| {
                let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
                Some((tid.to_string(), name.trim_end_matches('\n').to_string()))
            })
            .collect(),
        leakspy_version: env!("CARGO_PKG_VERSION"),
    };
    let mut notes: Vec<Note> = threads
        .iter()
        .map(|(tid, regs)| Note { owner: "CORE", kind: NT_PRSTATUS, desc: prstatus(*tid, regs, &stat) })
        .collect();
    notes.push(Note { owner: "CORE", kind: NT_PRPSINFO, desc: prpsinfo(pid, &stat, &identity) });
    if !auxv.is_empty() {
        notes.push(Note { owner: "CORE", kind: NT_AUXV, desc: auxv });
    }
    notes.push(Note { owner: "CORE", kind: NT_FILE, desc: file_note(&maps, &root) });
    let json = serde_json::to_vec(&leakspy_note).map_err(anyhow::Error::from)?;
    notes.push(Note { owner: "LEAKSPY", kind: NT_LEAKSPY, desc: json });
    let layout = CoreLayout::new(&notes, segments).map_err(|e| anyhow::anyhow!("laying out the image: {e}"))?;

    let compressed = !args.no_compress;
    let mut image_bytes = 0;
    let total = layout.total_bytes;
    write_output_with(destination, args.mode, &mut |out| {
        let mut counted = Counted { inner: out, bytes: 0 };
        let mut progress = |written: u64| hold_write_for_tests(written, total);
        if compressed {
            let mut encoder = zstd::stream::write::Encoder::new(&mut counted, ZSTD_LEVEL)?;
            encoder.include_contentsize(true)?;
            encoder.set_pledged_src_size(Some(total))?;
            layout.write(&mut encoder, &mut progress)?;
            encoder.finish()?;
        } else {
            layout.write(&mut counted, &mut progress)?;
        }
        image_bytes = counted.bytes;
        Ok(())
    })
    .with_context(|| format!("writing the image of process {pid}"))?;

    let report = DumpReport {
        pid,
        python_version: process.version.to_string(),
        image: if *destination == Destination::Stdout { "stdout".into() } else { args.output.display().to_string() },
        compressed,
        image_bytes,
        core_bytes: total,
        rss_bytes: rss,
        writable_bytes: maps.writable_bytes(),
        paused_ms,
        copied_bytes: copy.bytes_copied,
        read_only_bytes,
        segments: layout.segment_count(),
        threads: threads.len(),
        write_ms: writing.elapsed().as_secs_f64() * 1000.0,
        pauses,
        flaws: (flaws != u64::MAX).then_some(flaws),
    };
    print_report(&report, args.json, *destination == Destination::Stdout)
}

fn print_report(report: &DumpReport, json: bool, image_on_stdout: bool) -> Result<(), LeakspyError> {
    let rss = report.rss_bytes.map_or("unknown".to_string(), human_bytes);
    let form = if report.compressed {
        format!("zstd, {} as a plain core", human_bytes(report.core_bytes))
    } else {
        "plain ELF core".to_string()
    };
    eprintln!(
        "leakspy: dumped process {} (Python {}) to {}: {} ({form}) for an RSS of {rss}; threads stopped {:.1} ms to copy {}, \
         written in {:.0} ms",
        report.pid,
        report.python_version,
        terminal::message(&report.image),
        human_bytes(report.image_bytes),
        report.paused_ms,
        human_bytes(report.copied_bytes),
        report.write_ms,
    );
    if report.flaws != Some(0) {
        eprintln!(
            "leakspy: warning: every one of {} pauses caught the target mid-change (a list being relinked or a \
             collection running); the image keeps the last copy, and readings of it may count a few objects less",
            report.pauses
        );
    }
    if json {
        let text = terminal::json(serde_json::to_string_pretty(report).map_err(anyhow::Error::from)?) + "\n";
        if image_on_stdout {
            eprint!("{text}");
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|_| out.flush()).context("writing to stdout")?;
        }
    }
    Ok(())
}

/// Counts what goes through to the file.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The leakspy note: what a reader needs to read the image without any file of the target
/// (see the image format in the README).
#[derive(Serialize)]
struct LeakspyNote {
    format: u32,
    pid: i32,
    start_time_ticks: u64,
    exe: String,
    cmdline: Vec<String>,
    host: String,
    dumped_at_unix: f64,
    python_version: String,
    version_source: &'static str,
    binary: String,
    binary_build_id: Option<String>,
    load_bias: u64,
    symbols: std::collections::BTreeMap<&'static str, u64>,
    rss_bytes: u64,
    writable_bytes: u64,
    paused_ms: f64,
    copied_bytes: u64,
    threads: usize,
    /// Each thread's name (/proc/PID/task/TID/comm) by thread id, as `threads` in a census
    /// shows them for a live target.
    thread_names: std::collections::BTreeMap<String, String>,
    leakspy_version: &'static str,
}

struct Identity {
    exe: String,
    cmdline: Vec<String>,
    comm: String,
}

impl Identity {
    fn read(pid: i32) -> Identity {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim_end().to_string()).unwrap_or_default();
        Identity { exe, cmdline, comm }
    }
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The parts of /proc/PID/stat and status the process notes carry.
#[derive(Default)]
struct ProcStat {
    state: u8,
    ppid: i32,
    pgrp: i32,
    sid: i32,
    uid: u32,
    gid: u32,
}

impl ProcStat {
    fn read(pid: i32) -> ProcStat {
        let mut out = ProcStat::default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            out.state = fields.first().and_then(|s| s.bytes().next()).unwrap_or(b'S');
            let field = |k: usize| fields.get(k).and_then(|f| f.parse().ok()).unwrap_or(0);
            (out.ppid, out.pgrp, out.sid) = (field(1), field(2), field(3));
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let first = |name: &str| -> u32 {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0)
            };
            (out.uid, out.gid) = (first("Uid:"), first("Gid:"));
        }
        out
    }
}

/// x86-64 general registers as PTRACE_GETREGS and NT_PRSTATUS lay them out.
type Registers = [u64; 27];

/// Each thread of the process with its registers (zeros where they cannot be read), the main
/// thread first, as gdb expects. Call while the threads are stopped by this process.
fn thread_registers(pid: i32) -> Vec<(i32, Registers)> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_by_key(|&t| (t != pid, t));
    tids.into_iter()
        .map(|tid| {
            let mut regs: Registers = [0; 27];
            // SAFETY: PTRACE_GETREGS writes one user_regs_struct (27 u64 on x86-64) to the
            // buffer, which is that size; it fails (and writes nothing) for a thread not
            // stopped by us.
            let rc = unsafe {
                libc::ptrace(
                    libc::PTRACE_GETREGS,
                    tid,
                    std::ptr::null_mut::<libc::c_void>(),
                    regs.as_mut_ptr().cast::<libc::c_void>(),
                )
            };
            if rc == -1 {
                regs = [0; 27];
            }
            (tid, regs)
        })
        .collect()
}

/// struct elf_prstatus (x86-64, 336 bytes): the thread's id and registers.
fn prstatus(tid: i32, regs: &Registers, stat: &ProcStat) -> Vec<u8> {
    let mut out = vec![0u8; 336];
    out[32..36].copy_from_slice(&tid.to_le_bytes());
    out[36..40].copy_from_slice(&stat.ppid.to_le_bytes());
    out[40..44].copy_from_slice(&stat.pgrp.to_le_bytes());
    out[44..48].copy_from_slice(&stat.sid.to_le_bytes());
    for (i, r) in regs.iter().enumerate() {
        out[112 + 8 * i..120 + 8 * i].copy_from_slice(&r.to_le_bytes());
    }
    out
}

/// struct elf_prpsinfo (x86-64, 136 bytes): the process's id, name and arguments.
fn prpsinfo(pid: i32, stat: &ProcStat, identity: &Identity) -> Vec<u8> {
    let mut out = vec![0u8; 136];
    out[1] = stat.state;
    out[16..20].copy_from_slice(&stat.uid.to_le_bytes());
    out[20..24].copy_from_slice(&stat.gid.to_le_bytes());
    out[24..28].copy_from_slice(&pid.to_le_bytes());
    out[28..32].copy_from_slice(&stat.ppid.to_le_bytes());
    out[32..36].copy_from_slice(&stat.pgrp.to_le_bytes());
    out[36..40].copy_from_slice(&stat.sid.to_le_bytes());
    let fname = identity.comm.as_bytes();
    let n = fname.len().min(15);
    out[40..40 + n].copy_from_slice(&fname[..n]);
    let args = identity.cmdline.join(" ");
    let n = args.len().min(79);
    out[56..56 + n].copy_from_slice(&args.as_bytes()[..n]);
    out
}

/// NT_FILE as the kernel writes it: count, page size, (start, end, offset in pages) per
/// file-backed mapping, then their paths, NUL-terminated.
fn file_note(maps: &MemoryMap, root: &TargetRoot) -> Vec<u8> {
    let files: Vec<&Mapping> = maps.mappings.iter().filter(|m| m.is_file()).collect();
    let mut out = Vec::new();
    out.extend_from_slice(&(files.len() as u64).to_le_bytes());
    out.extend_from_slice(&PAGE.to_le_bytes());
    for m in &files {
        for v in [m.start, m.end, m.offset / PAGE] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for m in &files {
        out.extend_from_slice(root.inside(&m.path).as_bytes());
        out.push(0);
    }
    out
}

/// The target's root directory (/proc/PID/root), for paths as the target sees them: leakspy
/// sees a chrooted target's files under its root (/srv/jail/usr/bin/python3), the target and a
/// kernel core as /usr/bin/python3.
struct TargetRoot(Option<String>);

impl TargetRoot {
    fn read(pid: i32) -> TargetRoot {
        let root = std::fs::read_link(format!("/proc/{pid}/root")).ok().map(|r| r.to_string_lossy().into_owned());
        TargetRoot(root.filter(|r| r != "/" && r.starts_with('/')))
    }

    fn inside(&self, path: &str) -> String {
        match &self.0 {
            Some(root) => match path.strip_prefix(root.as_str()) {
                Some(rest) if rest.starts_with('/') => rest.to_string(),
                _ => path.to_string(),
            },
            None => path.to_string(),
        }
    }
}

/// The build id of the interpreter's binary, from its ELF headers in the target's memory
/// (the first page of its first mapping, and the PT_NOTE it points to); hex.
fn build_id(mem: &mut dyn RemoteMemory, process: &PythonProcess, maps: &MemoryMap) -> Option<String> {
    let first = maps.mappings.iter().find(|m| m.path == process.binary.path && m.offset == 0)?;
    let mut header = [0u8; 64];
    mem.read(first.start, &mut header).ok()?;
    if &header[..4] != b"\x7fELF" {
        return None;
    }
    let phoff = u64_at(&header, 32);
    let phnum = u16::from_le_bytes([header[56], header[57]]) as usize;
    if phnum > 256 || phoff > PAGE * 16 {
        return None;
    }
    let mut phdrs = vec![0u8; phnum * 56];
    mem.read(first.start + phoff, &mut phdrs).ok()?;
    for ph in phdrs.chunks_exact(56) {
        let p_type = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let (vaddr, size) = (u64_at(ph, 16), u64_at(ph, 32));
        if p_type != 4 || size > 1 << 16 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        mem.read(process.binary.load_bias.wrapping_add(vaddr), &mut notes).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let word = |k: usize| u32::from_le_bytes([notes[k], notes[k + 1], notes[k + 2], notes[k + 3]]) as usize;
            let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8));
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at.checked_add(descsz.div_ceil(4) * 4)?;
            if end > notes.len() {
                break;
            }
            if kind == 3 && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
                return Some(notes[desc_at..desc_at + descsz].iter().map(|b| format!("{b:02x}")).collect());
            }
            at = end;
        }
    }
    None
}

/// A run of the target's memory that goes into the image.
struct Piece {
    range: Range<u64>,
    flags: u32,
    data: PieceData,
}

enum PieceData {
    /// In the paused copy.
    Copied,
    /// Read after the pause.
    Read(Vec<u8>),
    /// Never written: zeros, saved only between other pieces.
    Zeros,
}

impl Piece {
    fn len(&self) -> u64 {
        self.range.end - self.range.start
    }
}

/// Which mappings are executable, by start address (leakspy's map keeps no such flag).
fn executable_starts(maps_text: &str) -> FxHashSet<u64> {
    maps_text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let start = u64::from_str_radix(fields.next()?.split('-').next()?, 16).ok()?;
            fields.next()?.contains('x').then_some(start)
        })
        .collect()
}

/// What goes into the image, in address order:
/// - the paused copy: everything the target wrote of its private writable mappings, and the
///   zero runs between (which become gaps or zeros, see `segments`);
/// - read after the pause, from the running target: the pages of private writable file
///   mappings the target never wrote (a library's .data as in the file), and every
///   read-only, non-executable mapping of an ELF file (.rodata and headers of the interpreter,
///   of libpython and of every extension module: static types' names live there). Code is
///   left out (leakspy never reads it), except in files whose .rodata shares the executable
///   mapping; so are shared mappings and files that are not ELF (a locale archive, a data file
///   the program mapped).
fn saved_pieces(
    copy: &mut CopiedMemory,
    maps: &MemoryMap,
    maps_text: &str,
    pid: i32,
) -> Result<Vec<Piece>, LeakspyError> {
    let executable = executable_starts(maps_text);
    let mut elf_files: FxHashMap<&str, bool> = FxHashMap::default();
    for m in maps.mappings.iter().filter(|m| m.is_file() && m.offset == 0) {
        let mut magic = [0u8; 4];
        let is_elf = copy.read(m.start, &mut magic).is_ok() && &magic == b"\x7fELF";
        *elf_files.entry(m.path.as_str()).or_default() |= is_elf;
    }
    // Files linked without a separate read-only data segment (older toolchains: numpy's wheels
    // for 3.6) keep .rodata in the executable mapping, with the code: theirs is saved too.
    let separate_rodata: FxHashSet<&str> = maps
        .mappings
        .iter()
        .filter(|m| m.is_file() && m.readable && m.offset > 0 && !m.writable && !executable.contains(&m.start))
        .map(|m| m.path.as_str())
        .collect();
    let listed: Vec<(Range<u64>, PieceKind)> = copy.pieces().collect();
    let mut pieces = Vec::new();
    for (range, kind) in listed {
        let Some(m) = maps.find(range.start) else { continue };
        let exec = executable.contains(&m.start);
        let flags = PF_R | if m.writable { PF_W } else { 0 } | if exec { PF_X } else { 0 };
        let private_writable = m.writable && !m.shared;
        let data = match kind {
            PieceKind::Copied => PieceData::Copied,
            PieceKind::Zeros => PieceData::Zeros,
            PieceKind::Live if private_writable && m.is_file() => PieceData::Read(Vec::new()),
            PieceKind::Live
                if !m.writable
                    && m.is_file()
                    && elf_files.get(m.path.as_str()) == Some(&true)
                    && (!exec || !separate_rodata.contains(m.path.as_str())) =>
            {
                PieceData::Read(Vec::new())
            }
            PieceKind::Live => continue,
        };
        match data {
            PieceData::Read(_) => pieces.extend(read_after_pause(copy, range, flags, pid)?),
            data => pieces.push(Piece { range, flags, data }),
        }
    }
    Ok(pieces)
}

/// Reads a range from the running target, leaving out the pages that cannot be read (a file
/// mapping past the end of its file).
fn read_after_pause(
    copy: &mut CopiedMemory,
    range: Range<u64>,
    flags: u32,
    pid: i32,
) -> Result<Vec<Piece>, LeakspyError> {
    let mut out: Vec<Piece> = Vec::new();
    let mut push = |addr: u64, bytes: &[u8]| match out.last_mut() {
        Some(Piece { range, data: PieceData::Read(held), .. }) if range.end == addr => {
            held.extend_from_slice(bytes);
            range.end += bytes.len() as u64;
        }
        _ => out.push(Piece { range: addr..addr + bytes.len() as u64, flags, data: PieceData::Read(bytes.to_vec()) }),
    };
    let mut buf = vec![0u8; READ_PIECE];
    let mut addr = range.start;
    while addr < range.end {
        let n = ((range.end - addr) as usize).min(READ_PIECE);
        match copy.read(addr, &mut buf[..n]) {
            Ok(()) => push(addr, &buf[..n]),
            // Page by page: what can be read is kept.
            Err(e) if e.is_torn() => {
                for page in (addr..addr + n as u64).step_by(PAGE as usize) {
                    let len = (addr + n as u64 - page).min(PAGE) as usize;
                    match copy.read(page, &mut buf[..len]) {
                        Ok(()) => push(page, &buf[..len]),
                        Err(e) if e.is_torn() => {}
                        Err(e) => return Err(read_error(pid, e)),
                    }
                }
            }
            Err(e) => return Err(read_error(pid, e)),
        }
        addr += n as u64;
    }
    Ok(out)
}

/// Groups the pieces into PT_LOAD segments: adjacent pieces with the same permissions form one
/// segment; a zero run between two pieces is written as zeros if short, and only its edges
/// next to data otherwise (see `group`). Longer zero runs are filled if that is what it takes
/// to stay within the number of segments an ELF file can list.
fn segments<'a>(copy: &'a CopiedMemory, pieces: Vec<Piece>) -> Vec<Segment<'a>> {
    let mut fill = ZERO_GAP_FILL;
    let groups = loop {
        let groups = group(&pieces, fill);
        if groups.len() <= MAX_SEGMENTS || fill >= 1 << 40 {
            break groups;
        }
        fill *= 4;
    };
    let mut pieces: Vec<Option<Piece>> = pieces.into_iter().map(Some).collect();
    groups
        .into_iter()
        .map(|members| {
            let mut chunks = Vec::with_capacity(members.len());
            let vaddr = members.first().map_or(0, |(_, range)| range.start);
            let mut flags = PF_R;
            for (k, range) in members {
                let Some(piece) = pieces[k].as_ref() else { continue };
                flags = piece.flags;
                let len = range.end - range.start;
                chunks.push(match &piece.data {
                    // The copy holds every byte of a copied piece; zeros if it somehow did not.
                    PieceData::Copied => match copy.copied(range) {
                        Some(bytes) => Chunk::Borrowed(bytes),
                        None => Chunk::Zeros(len),
                    },
                    PieceData::Zeros => Chunk::Zeros(len),
                    PieceData::Read(_) => match pieces[k].take().map(|p| p.data) {
                        Some(PieceData::Read(bytes)) => Chunk::Owned(bytes),
                        _ => Chunk::Zeros(len),
                    },
                });
            }
            Segment { vaddr, flags, chunks }
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The pieces of each segment, as (index, the part of the piece saved). A zero run between two
/// pieces is saved whole if at most `fill` long; otherwise (and at either end of a run of
/// pieces) only its first and last `ZERO_EDGE` bytes next to saved data are, so that a read a
/// little past what the target wrote (a frame's unused value stack, the rest of a struct at the
/// end of a page) reads the zeros the process would give, as the paused copy does.
fn group(pieces: &[Piece], fill: u64) -> Vec<Vec<(usize, Range<u64>)>> {
    let is_zeros = |k: usize| matches!(pieces[k].data, PieceData::Zeros);
    let adjacent =
        |a: usize, b: usize| pieces[a].range.end == pieces[b].range.start && pieces[a].flags == pieces[b].flags;
    let mut groups: Vec<Vec<(usize, Range<u64>)>> = Vec::new();
    let mut current: Vec<(usize, Range<u64>)> = Vec::new();
    let close = |current: &mut Vec<(usize, Range<u64>)>, groups: &mut Vec<Vec<(usize, Range<u64>)>>| {
        if current.iter().any(|(k, _)| !is_zeros(*k)) {
            groups.push(std::mem::take(current));
        }
        current.clear();
    };
    for (k, piece) in pieces.iter().enumerate() {
        let joins = current.last().is_some_and(|(last, _)| adjacent(*last, k));
        if !joins {
            close(&mut current, &mut groups);
        }
        if !is_zeros(k) {
            current.push((k, piece.range.clone()));
            continue;
        }
        let after_data = joins && current.last().is_some_and(|(last, _)| !is_zeros(*last));
        let before_data = pieces.get(k + 1).is_some_and(|_| adjacent(k, k + 1) && !is_zeros(k + 1));
        if after_data && before_data && piece.len() <= fill {
            current.push((k, piece.range.clone()));
            continue;
        }
        let edge = piece.len().min(ZERO_EDGE);
        if after_data {
            current.push((k, piece.range.start..piece.range.start + edge));
        }
        close(&mut current, &mut groups);
        if before_data {
            current.push((k, piece.range.end - edge..piece.range.end));
        }
    }
    close(&mut current, &mut groups);
    groups
}

/// Test hook: LEAKSPY_TEST_HOLD_WRITE_MS holds the dump that long once half of the image is
/// written, so that a test can kill leakspy mid-write and check that no FILE is left.
fn hold_write_for_tests(written: u64, total: u64) {
    static HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if written * 2 < total || HELD.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Some(ms) = std::env::var("LEAKSPY_TEST_HOLD_WRITE_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start: u64, end: u64, data: PieceData) -> Piece {
        Piece { range: start..end, flags: PF_R | PF_W, data }
    }

    #[test]
    fn short_zero_runs_are_filled_and_long_ones_split() {
        let pieces = vec![
            piece(0, 0x1000, PieceData::Zeros),
            piece(0x1000, 0x2000, PieceData::Copied),
            piece(0x2000, 0x3000, PieceData::Zeros),
            piece(0x3000, 0x4000, PieceData::Copied),
            piece(0x4000, 0x100000, PieceData::Zeros),
            piece(0x100000, 0x101000, PieceData::Copied),
            piece(0x101000, 0x102000, PieceData::Zeros),
            piece(0x200000, 0x201000, PieceData::Read(vec![0; 0x1000])),
        ];
        let indices = |groups: Vec<Vec<(usize, Range<u64>)>>| -> Vec<Vec<usize>> {
            groups.into_iter().map(|g| g.into_iter().map(|(k, _)| k).collect()).collect()
        };
        assert_eq!(indices(group(&pieces, ZERO_GAP_FILL)), vec![vec![0, 1, 2, 3, 4], vec![4, 5, 6], vec![7]]);
        let groups = group(&pieces, ZERO_GAP_FILL);
        assert_eq!(groups[0][4].1, 0x4000..0x4000 + ZERO_EDGE, "the start of a long zero run after data");
        assert_eq!(groups[1][0].1, 0x100000 - ZERO_EDGE..0x100000, "the end of one before data");
        assert_eq!(groups[0][0].1, 0..0x1000, "a short run before the data, whole");
        assert_eq!(indices(group(&pieces, 1 << 20)), vec![vec![0, 1, 2, 3, 4, 5, 6], vec![7]]);
    }
}
