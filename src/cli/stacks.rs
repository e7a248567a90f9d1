//! `leakspy stacks PID`: what each thread is running, as a traceback prints it (innermost
//! frame last), with thread ids, names and the GIL's holder; `--locals` adds each frame's
//! local variables with their types and sizes: the frame that holds a growing list names
//! itself.

use super::{TargetArgs, open_target};
use crate::cpython::process::retry_transient;
use crate::cpython::stacks::{ThreadStack, read_stacks};
use crate::cpython::state::threads;
use crate::error::LeakspyError;
use crate::memory::RemoteMemory;
use crate::text::{human_bytes, terminal};
use serde::Serialize;
use std::fmt::Write;

#[derive(clap::Args)]
pub struct StacksArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also list each frame's local variables: name, type and size (sys.getsizeof).
    #[arg(long)]
    pub locals: bool,
    /// Print the stacks as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct StacksReport {
    pid: i32,
    python_version: String,
    /// Threads left out because they exited under the read.
    skipped_threads: u64,
    stacks: Vec<ThreadStack>,
}

pub fn run(args: StacksArgs) -> Result<(), LeakspyError> {
    let (process, mut mem) = open_target(args.target.resolve()?)?;
    let ((stacks, skipped), _) = retry_transient(true, |_| {
        mem.invalidate();
        let listed = process.interpreters(&mut mem)?;
        let (infos, skipped_threads) = threads(&process, &mut mem, &listed.interpreters)?;
        let (stacks, skipped) = read_stacks(&process, &mut mem, &listed.interpreters, &infos, args.locals)?;
        Ok((stacks, skipped + skipped_threads))
    })?;
    let report = StacksReport {
        pid: process.pid,
        python_version: process.version.to_string(),
        skipped_threads: skipped,
        stacks,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?;
        println!("{}", terminal::json(text));
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn render(report: &StacksReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "PID {}  Python {}  {} threads", report.pid, report.python_version, report.stacks.len());
    for t in &report.stacks {
        // threading's name where it has one, else the kernel's.
        let name = t
            .python_name
            .as_deref()
            .or(t.name.as_deref())
            .map_or(String::new(), |n| format!(" ({})", terminal::name(n)));
        let native = t.native_thread_id.map_or(String::new(), |id| format!(" native {id}"));
        let gil = if t.holds_gil { "  holds the GIL" } else { "" };
        let _ = writeln!(out, "\nThread {:#x}{native}{name}{gil}", t.thread_id);
        if t.frames.is_empty() {
            let _ = writeln!(out, "    (no Python frames)");
        }
        for f in &t.frames {
            let line = f.line.map_or("?".to_string(), |l| l.to_string());
            let _ = writeln!(out, "    {} ({}:{line})", terminal::name(&f.function), terminal::name(&f.file));
            for local in f.locals.iter().flatten() {
                let size = local.size.map_or(String::new(), |s| format!(" {}", human_bytes(s)));
                let _ = writeln!(
                    out,
                    "        {}: {}{size}",
                    terminal::name(&local.name),
                    terminal::name(&local.type_name)
                );
            }
        }
    }
    if report.skipped_threads > 0 {
        let _ = writeln!(out, "\nnote: {} threads exited during the read and are left out", report.skipped_threads);
    }
    out
}
