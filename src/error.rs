//! The failures a user can cause, each with one actionable sentence and its own exit code,
//! so that scripts and cron jobs can tell "target gone" from "not allowed" without parsing text.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LeakspyError {
    #[error("no process with PID {pid}: check the PID (ps -ef | grep python) and that it is still running")]
    NoSuchProcess { pid: i32 },

    #[error("no process's command line contains {pattern:?}: check it with `ps -eo pid,args`")]
    NoMatchingProcess { pattern: String },

    #[error("no Python process's command line contains {pattern:?}; it matches processes {detail}")]
    NoPythonMatch { pattern: String, detail: String },

    #[error("no Python process {whose} has {pattern:?} in its command line; it matches processes {detail}")]
    NoSelectableMatch { pattern: String, whose: String, detail: String },

    /// Options that do not go together, beyond what the argument parser checks.
    #[error("{0}")]
    Usage(String),

    #[error(
        "the target options select {count} Python processes: {listed}; this command reads one: give its PID \
         (`leakspy ps` shows them as a tree)"
    )]
    AmbiguousTarget { count: usize, listed: String },

    #[error("growth threshold crossed: {detail}")]
    GrowthThreshold { detail: String },

    #[error(
        "permission denied reading process {pid}: {detail}. Run leakspy as root (sudo) or as the target's \
         user with ptrace allowed (kernel.yama.ptrace_scope is {ptrace_scope}; 0 allows it, 1 allows it only \
         for descendants, 2 needs CAP_SYS_PTRACE, 3 forbids it); in a container grant CAP_SYS_PTRACE \
         (docker run --cap-add SYS_PTRACE, or securityContext.capabilities.add: [SYS_PTRACE])"
    )]
    PermissionDenied { pid: i32, detail: String, ptrace_scope: String },

    #[error(
        "process {pid} is already traced by process {tracer} ({tracer_name}): a process can have one tracer, \
         and --pause needs to be it. Detach that debugger or tracer and retry, or run without --pause"
    )]
    AlreadyTraced { pid: i32, tracer: i32, tracer_name: String },

    #[error("process {pid} is not a CPython process: {detail}")]
    NotPython { pid: i32, detail: String },

    #[error("process {pid} runs Python {version}, which leakspy does not support: {detail}")]
    UnsupportedVersion { pid: i32, version: String, detail: String },

    #[error(
        "process {pid} (Python {version}) does not match leakspy's struct offsets: {detail}. \
         Refusing to read garbage; please report this with the output of `python -VV` of the target"
    )]
    LayoutMismatch { pid: i32, version: String, detail: String },

    #[error("process {pid} exited while leakspy was reading it; nothing was written")]
    ProcessExited { pid: i32 },

    /// What a running target changed under the read: a pointer followed as it was freed, a
    /// list relinked between two reads. Retried before it reaches the user.
    #[error(
        "process {pid} changed under every one of {attempts} reads ({detail}); it is too busy to read \
         while it runs: try again, or use --pause to stop it for the copy"
    )]
    TargetChanged { pid: i32, attempts: u32, detail: String },

    /// A core file or image that cannot be read as one: not ELF, not a core, truncated, corrupt.
    #[error("{path}: {detail}")]
    BadCore { path: String, detail: String },

    #[error("{path}: process {pid} in this core is not a CPython process: {detail}")]
    CoreNotPython { path: String, pid: i32, detail: String },

    #[error(
        "{path}: {detail}; the core leaves the interpreter's file out: give its copy with --python-binary PATH, \
         or the dumped machine's root with --sysroot DIR"
    )]
    CoreFileMissing { path: String, detail: String },

    #[error(
        "{file} is not the file the process in {core} ran ({detail}): refusing to read the core with it; give \
         the right one with --python-binary or --sysroot"
    )]
    CoreBuildIdMismatch { core: String, file: String, detail: String },

    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl LeakspyError {
    /// Distinct exit codes, documented in the README; 2 is left to clap for usage errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            LeakspyError::Other(_) => 1,
            LeakspyError::AmbiguousTarget { .. } | LeakspyError::Usage(_) => 2,
            LeakspyError::NoSuchProcess { .. }
            | LeakspyError::NoMatchingProcess { .. }
            | LeakspyError::NoSelectableMatch { .. } => 3,
            LeakspyError::PermissionDenied { .. } | LeakspyError::AlreadyTraced { .. } => 4,
            LeakspyError::NotPython { .. } | LeakspyError::NoPythonMatch { .. } => 5,
            LeakspyError::UnsupportedVersion { .. } => 6,
            LeakspyError::LayoutMismatch { .. } => 7,
            LeakspyError::ProcessExited { .. } => 8,
            LeakspyError::GrowthThreshold { .. } => 9,
            LeakspyError::TargetChanged { .. } => 10,
            LeakspyError::BadCore { .. } => 11,
            LeakspyError::CoreNotPython { .. } => 12,
            LeakspyError::CoreFileMissing { .. } => 13,
            LeakspyError::CoreBuildIdMismatch { .. } => 14,
        }
    }

    /// True for what a later read of the same target may not meet again: the target changed
    /// under this one. Everything else (gone, denied, not Python, a layout mismatch decided on
    /// stable evidence) is the same however often leakspy asks.
    pub fn is_transient(&self) -> bool {
        matches!(self, LeakspyError::TargetChanged { .. })
    }
}

/// The current ptrace policy, quoted in the permission-denied message because it is the first
/// thing a user has to know; "not set (no Yama)" when the kernel has no Yama module.
pub fn ptrace_scope() -> String {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "not set (no Yama LSM)".to_string())
}

pub type Result<T, E = LeakspyError> = std::result::Result<T, E>;
