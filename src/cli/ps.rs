//! `leakspy ps`: the Python processes this user may read, as a tree (a server's master with its
//! workers under it), to find the PID to give the other commands.

use super::open_target;
use crate::cpython::discover::{Probe, probe};
use crate::cpython::process::retry_transient;
use crate::error::LeakspyError;
use crate::heap::census::take_census;
use crate::heap::walk::WalkLimits;
use crate::memory::proc_info::rss_bytes;
use crate::memory::processes::{self, ProcessEntry, uptime_secs};
use crate::output::ps::{PsLine, render};
use crate::text::terminal;
use std::collections::HashMap;

#[derive(clap::Args)]
pub struct PsArgs {
    /// Also count each process's GC-tracked objects: a census of each (about 0.1 s per million
    /// objects), not needed to list them.
    #[arg(long)]
    pub objects: bool,
    /// One JSON object per process and line, in tree order (`depth`, `python_parent`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PsArgs) -> Result<(), LeakspyError> {
    let table = processes::list();
    let me = std::process::id() as i32;
    let mut found: Vec<(ProcessEntry, String)> = Vec::new();
    let mut unreadable = 0usize;
    for e in &table {
        // Kernel threads have no command line and no memory map: nothing to look at.
        if e.pid == me || e.cmdline.is_empty() {
            continue;
        }
        match probe(e.pid) {
            Probe::Python { version, .. } => found.push((e.clone(), version.to_string())),
            Probe::Unreadable(_) => unreadable += 1,
            Probe::NotPython(_) | Probe::Gone => {}
        }
    }
    let lines = tree(&table, found, args.objects);
    let text = if args.json {
        let mut out = String::new();
        for line in &lines {
            out.push_str(&terminal::json(serde_json::to_string(line).map_err(anyhow::Error::from)?));
            out.push('\n');
        }
        out
    } else {
        render(&lines, args.objects)
    };
    print!("{text}");
    if unreadable > 0 {
        let why = if processes::current_uid() == 0 {
            "denied even to root: another user namespace, or a security module"
        } else {
            "other users' processes: run as root, or see the ptrace permission in the README"
        };
        eprintln!("leakspy: note: {unreadable} processes could not be looked at ({why})");
    }
    Ok(())
}

/// The Python processes in tree order: each under its nearest Python ancestor (a shell or
/// an init between them is skipped over), roots and siblings by PID.
fn tree(table: &[ProcessEntry], found: Vec<(ProcessEntry, String)>, objects: bool) -> Vec<PsLine> {
    let parents: HashMap<i32, i32> = table.iter().map(|e| (e.pid, e.ppid)).collect();
    let python: HashMap<i32, usize> = found.iter().enumerate().map(|(i, (e, _))| (e.pid, i)).collect();
    let python_parent = |pid: i32| -> Option<i32> {
        let mut at = pid;
        // Bounded: a chain is never longer than the table (a torn read could show a loop).
        for _ in 0..table.len() {
            let parent = *parents.get(&at)?;
            if parent <= 0 || parent == pid {
                return None;
            }
            if python.contains_key(&parent) {
                return Some(parent);
            }
            at = parent;
        }
        None
    };
    let mut children: HashMap<Option<i32>, Vec<usize>> = HashMap::new();
    for (i, (e, _)) in found.iter().enumerate() {
        children.entry(python_parent(e.pid)).or_default().push(i);
    }
    let mut lines = Vec::with_capacity(found.len());
    // Depth-first, iteratively: (index, depth, whether it is its parent's last child, the
    // continuation marks of its ancestors).
    let mut stack: Vec<(usize, usize, bool, Vec<bool>)> = Vec::new();
    let push_children = |stack: &mut Vec<_>, of: Option<i32>, depth: usize, marks: Vec<bool>| {
        let mut kids = children.get(&of).cloned().unwrap_or_default();
        kids.sort_by_key(|&i| found[i].0.pid);
        let n = kids.len();
        for (k, i) in kids.into_iter().enumerate().rev() {
            stack.push((i, depth, k + 1 == n, marks.clone()));
        }
    };
    push_children(&mut stack, None, 0, Vec::new());
    let mut visited = vec![false; found.len()];
    while let Some((i, depth, last, marks)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        let (e, version) = &found[i];
        let mut prefix = String::new();
        if depth > 0 {
            for more in &marks[1..] {
                prefix.push_str(if *more { "│  " } else { "   " });
            }
            prefix.push_str(if last { "└─ " } else { "├─ " });
        }
        lines.push(PsLine {
            pid: e.pid,
            ppid: e.ppid,
            python_parent: python_parent(e.pid),
            depth,
            tree_prefix: prefix,
            user: processes::user_name(e.uid).unwrap_or_else(|| e.uid.to_string()),
            uid: e.uid,
            python_version: version.clone(),
            rss_bytes: rss_bytes(e.pid),
            uptime_s: uptime_secs(e.start_ticks).map(|s| s.round() as u64),
            cmdline: e.cmdline.clone(),
            objects: if objects { count_objects(e.pid) } else { None },
        });
        let mut child_marks = marks.clone();
        child_marks.push(!last);
        push_children(&mut stack, Some(e.pid), depth + 1, child_marks);
    }
    lines
}

/// The GC-tracked objects of a process: a plain census (no findings, no graph).
fn count_objects(pid: i32) -> Option<u64> {
    let (process, mut mem) = open_target(pid).ok()?;
    retry_transient(true, |_| take_census(&process, &mut mem, WalkLimits::default()))
        .ok()
        .map(|(census, _)| census.objects_total)
}
