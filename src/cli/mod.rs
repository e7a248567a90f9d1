//! The commands: argument types and the loops that drive the rooms below. With output/, the
//! only code that prints.

pub mod attach;
pub mod history;
pub mod snapshot;

use crate::cpython::process::PythonProcess;
use crate::error::LeakspyError;
use crate::heap::census::{Census, take_census};
use crate::heap::walk::WalkLimits;
use crate::memory::live::LiveProcess;
use crate::memory::proc_info::ProcessInfo;

/// Which process to read: cron jobs rarely know a PID, so a PID file or a command-line match
/// will do too.
#[derive(clap::Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// PID of the Python process.
    pub pid: Option<i32>,
    /// Read the PID from FILE (as daemons and systemd's PIDFile= write it).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<std::path::PathBuf>,
    /// The first process (lowest PID) whose command line contains PATTERN.
    #[arg(long = "match", value_name = "PATTERN")]
    pub pattern: Option<String>,
}

impl TargetArgs {
    pub fn resolve(&self) -> Result<i32, LeakspyError> {
        if let Some(pid) = self.pid {
            return Ok(pid);
        }
        if let Some(path) = &self.pid_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading PID file {}: {e}", path.display()))?;
            return text.trim().parse().map_err(|_| {
                anyhow::anyhow!("PID file {} does not hold a PID: {:?}", path.display(), text.trim()).into()
            });
        }
        let pattern = self.pattern.clone().unwrap_or_default();
        crate::memory::proc_info::find_by_cmdline(&pattern).ok_or(LeakspyError::NoMatchingProcess { pattern })
    }
}

/// Opens a target for reading and identifies its interpreter.
pub fn open_target(pid: i32) -> Result<(PythonProcess, LiveProcess), LeakspyError> {
    let mut mem = LiveProcess::new(pid);
    let process = PythonProcess::inspect(pid, &mut mem)?;
    Ok((process, mem))
}

/// A census with the process's identity attached, as every command records it.
pub fn take_census_of_process(
    process: &PythonProcess,
    mem: &mut LiveProcess,
    max_objects: u64,
) -> Result<Census, LeakspyError> {
    let mut census = take_census(process, mem, WalkLimits { max_objects })?;
    census.process = Some(ProcessInfo::read(process.pid));
    Ok(census)
}
