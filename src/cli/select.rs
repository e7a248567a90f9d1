//! Which processes a command reads: one PID, a PID file, every Python process whose command
//! line matches, and with `--children` their Python descendants.
//!
//! A pre-fork server is a master and its workers, and the leak is in the workers: `--match`
//! selects every matching *Python* process (a shell wrapper or an init that carries the same
//! words is skipped), and `--children` the Python processes under the one given, as py-spy's
//! `--subprocesses` does. `attach` scans again before every round, to follow workers that
//! appear (a worker replaced after `--max-requests`).
//!
//! leakspy runs as root against processes it does not trust. A pattern is a loose way to name
//! a target: anyone can start a process whose command line holds it. So `--match` selects
//! only processes of the user leakspy runs as, unless `--user` or `--all-users` says which
//! others; a PID given outright, and the descendants of a selected process (the service's own
//! workers, whatever user they dropped to), are what the user asked for.

use super::TargetArgs;
use crate::cpython::discover::{Probe, probe};
use crate::error::LeakspyError;
use crate::memory::proc_info::{ProcessIdentity, Sameness};
use crate::memory::processes::{self, ProcessEntry, current_uid, describe_user};
use crate::text::terminal;
use std::collections::HashMap;

/// A process younger than this is looked at again each scan until it is Python.
const SETTLED_SECS: f64 = 3.0;

/// Whose processes `--match` may select.
#[derive(Debug, Clone, PartialEq)]
pub enum UserRule {
    /// Only the user leakspy runs as.
    Own(u32),
    /// Only these (`--user`, repeatable).
    Users(Vec<u32>),
    /// Anyone's (`--all-users`).
    All,
}

impl UserRule {
    fn allows(&self, uid: u32) -> bool {
        match self {
            UserRule::Own(own) => uid == *own,
            UserRule::Users(users) => users.contains(&uid),
            UserRule::All => true,
        }
    }
}

/// Where the selected processes come from.
#[derive(Debug, Clone)]
enum Base {
    /// Given outright (a PID, a PID file), with who each was when given.
    Pids(Vec<(i32, ProcessIdentity)>),
    /// Every process whose command line contains the pattern.
    Match(String),
}

/// A process that matched `--match` but was not selected, and why.
#[derive(Debug, Clone)]
pub struct Passed {
    pub pid: i32,
    pub cmdline: String,
    pub why: String,
}

/// One scan's result.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The selected Python processes: the roots first, then their descendants.
    pub pids: Vec<i32>,
    /// With `--match`: processes that matched but are not Python.
    pub not_python: Vec<Passed>,
    /// With `--match`: processes that matched but belong to users the rule leaves out.
    pub other_users: Vec<(Passed, u32)>,
    /// With `--match`: processes that matched, that this user may not read.
    pub unreadable: Vec<Passed>,
}

/// The rule that selects processes, kept so that it can be applied again as processes come
/// and go.
#[derive(Debug, Clone)]
pub struct Selector {
    base: Base,
    children: bool,
    users: UserRule,
    /// What a look at each process found, by PID and start time: a PID is looked at once in
    /// its life, not every round.
    probed: HashMap<(i32, u64), Probe>,
}

impl Selector {
    /// True if processes can join the selection after it was made: a pattern can match a new
    /// process, and a process gets new children.
    pub fn follows(&self) -> bool {
        self.children || matches!(self.base, Base::Match(_))
    }

    /// The processes the rule selects now.
    pub fn scan(&mut self) -> Scan {
        let table = processes::list();
        let mut scan = Scan::default();
        let roots: Vec<i32> = match &self.base {
            Base::Pids(pids) => pids
                .iter()
                .filter(|(pid, identity)| identity.check(*pid) == Sameness::Same)
                .map(|(pid, _)| *pid)
                .collect(),
            Base::Match(pattern) => {
                let ours = processes::self_and_ancestors();
                let matched: Vec<&ProcessEntry> = table
                    .iter()
                    .filter(|e| !ours.contains(&e.pid) && !e.cmdline.is_empty() && e.cmdline.contains(pattern.as_str()))
                    .collect();
                let mut roots = Vec::new();
                for e in matched {
                    let passed = |why: String| Passed { pid: e.pid, cmdline: e.cmdline.clone(), why };
                    if !self.users.allows(e.uid) {
                        scan.other_users.push((passed(describe_user(e.uid)), e.uid));
                        continue;
                    }
                    match self.probe(e) {
                        Probe::Python { .. } => roots.push(e.pid),
                        Probe::NotPython(why) => scan.not_python.push(passed(why)),
                        Probe::Unreadable(why) => scan.unreadable.push(passed(why)),
                        Probe::Gone => {}
                    }
                }
                roots
            }
        };
        for &root in &roots {
            if self.children && !matches!(self.base, Base::Match(_)) {
                // A PID given outright is read even if the look says otherwise: the census
                // then says exactly what is wrong with it.
                if let Some(e) = table.iter().find(|e| e.pid == root)
                    && !self.probe(e).is_python()
                {
                    continue;
                }
            }
            if !scan.pids.contains(&root) {
                scan.pids.push(root);
            }
        }
        if self.children {
            for root in roots {
                for pid in processes::descendants(&table, root) {
                    let Some(e) = table.iter().find(|e| e.pid == pid) else { continue };
                    if !scan.pids.contains(&pid) && self.probe(e).is_python() {
                        scan.pids.push(pid);
                    }
                }
            }
        }
        scan
    }

    fn probe(&mut self, e: &ProcessEntry) -> Probe {
        if let Some(known) = self.probed.get(&(e.pid, e.start_ticks)) {
            return known.clone();
        }
        let found = probe(e.pid);
        // A process that has just started may not have loaded its libpython yet (the dynamic
        // loader is still at work, or an exec is under way): it is looked at again next time.
        let settled = found.is_python() || processes::uptime_secs(e.start_ticks).is_some_and(|s| s > SETTLED_SECS);
        if settled {
            if self.probed.len() > 65_536 {
                self.probed.clear();
            }
            self.probed.insert((e.pid, e.start_ticks), found.clone());
        }
        found
    }
}

/// The processes selected at the start, and the rule, for commands that follow them.
#[derive(Debug)]
pub struct Selection {
    pub pids: Vec<i32>,
    pub selector: Selector,
}

impl TargetArgs {
    fn user_rule(&self) -> UserRule {
        if self.all_users {
            UserRule::All
        } else if !self.users.is_empty() {
            UserRule::Users(self.users.clone())
        } else {
            UserRule::Own(current_uid())
        }
    }

    fn given_pid(&self) -> Result<Option<i32>, LeakspyError> {
        if self.which.core.is_some() {
            return Err(LeakspyError::Usage(
                "--core FILE is read by `snapshot` and `why`; this command reads a live process: give its PID".into(),
            ));
        }
        if (self.all_users || !self.users.is_empty()) && self.which.pattern.is_none() {
            return Err(LeakspyError::Usage(
                "--user and --all-users choose whose processes --match may select; a PID or a PID file names its \
                 process whoever's it is: leave them out, or use --match"
                    .into(),
            ));
        }
        if let Some(pid) = self.which.pid {
            return Ok(Some(pid));
        }
        if let Some(path) = &self.which.pid_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading PID file {}: {e}", path.display()))?;
            return text.trim().parse().map(Some).map_err(|_| {
                anyhow::anyhow!("PID file {} does not hold a PID: {:?}", path.display(), text.trim()).into()
            });
        }
        Ok(None)
    }

    /// What the target options select now: see the module's documentation. Fails when nothing
    /// is selected, saying what matched and why it was passed over.
    pub fn select(&self) -> Result<Selection, LeakspyError> {
        let base = match self.given_pid()? {
            Some(pid) => {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() || pid <= 0 {
                    return Err(LeakspyError::NoSuchProcess { pid });
                }
                Base::Pids(vec![(pid, ProcessIdentity::read(pid))])
            }
            None => Base::Match(self.which.pattern.clone().unwrap_or_default()),
        };
        let mut selector = Selector { base, children: self.children, users: self.user_rule(), probed: HashMap::new() };
        let scan = selector.scan();
        match &selector.base {
            Base::Match(pattern) => {
                if scan.pids.is_empty() {
                    return Err(nothing_matched(pattern, &scan, &selector.users));
                }
                note_passed_over(&scan, &selector.users);
            }
            Base::Pids(pids) if scan.pids.is_empty() => {
                // --children of a process that is not Python and has no Python under it: the
                // census's own error says what it is.
                let pid = pids.first().map_or(0, |(pid, _)| *pid);
                return Ok(Selection { pids: vec![pid], selector });
            }
            Base::Pids(pids) if !self.children => {
                // A shell, an init or a launcher given by PID: say where the Python is.
                let pid = pids.first().map_or(0, |(pid, _)| *pid);
                if let Probe::NotPython(why) = probe(pid) {
                    let table = processes::list();
                    let under: Vec<i32> = processes::descendants(&table, pid)
                        .into_iter()
                        .filter(|child| probe(*child).is_python())
                        .collect();
                    if !under.is_empty() {
                        return Err(LeakspyError::NotPython {
                            pid,
                            detail: format!(
                                "{why}; the Python processes under it ({}) are read with --children",
                                listing(&under)
                            ),
                        });
                    }
                }
            }
            Base::Pids(_) => {}
        }
        Ok(Selection { pids: scan.pids, selector })
    }

    /// The one process a command that reads one (`why`) reads. Several selected is an error
    /// that lists them, so that the user picks one.
    pub fn resolve(&self) -> Result<i32, LeakspyError> {
        if !self.children
            && let Some(pid) = self.given_pid()?
        {
            return Ok(pid);
        }
        let selection = self.select()?;
        match selection.pids.as_slice() {
            [one] => Ok(*one),
            many => Err(LeakspyError::AmbiguousTarget { count: many.len(), listed: listing(many) }),
        }
    }
}

/// "4101 (gunicorn: worker [app]), 4102 (...)", at most 10, command lines shortened.
fn listing(pids: &[i32]) -> String {
    let mut parts: Vec<String> = pids
        .iter()
        .take(10)
        .map(|&pid| {
            let cmdline = crate::memory::proc_info::cmdline(pid).unwrap_or_default();
            format!("{pid} ({})", terminal::name_within(&cmdline, 60))
        })
        .collect();
    if pids.len() > 10 {
        parts.push(format!("and {} more", pids.len() - 10));
    }
    parts.join(", ")
}

fn passed_list(passed: &[Passed], with_why: bool) -> String {
    let mut parts: Vec<String> = passed
        .iter()
        .take(5)
        .map(|p| {
            let what = terminal::name_within(&p.cmdline, 60);
            if with_why { format!("{} ({what}: {})", p.pid, p.why) } else { format!("{} ({what}, {})", p.pid, p.why) }
        })
        .collect();
    if passed.len() > 5 {
        parts.push(format!("and {} more", passed.len() - 5));
    }
    parts.join(", ")
}

/// `--user` arguments that would select the other users' processes that matched.
fn user_hint(others: &[(Passed, u32)]) -> String {
    let mut uids: Vec<u32> = others.iter().map(|(_, uid)| *uid).collect();
    uids.sort_unstable();
    uids.dedup();
    uids.iter()
        .map(|uid| format!("--user {}", processes::user_name(*uid).unwrap_or_else(|| uid.to_string())))
        .collect::<Vec<_>>()
        .join(" ")
}

fn whose(rule: &UserRule) -> String {
    match rule {
        UserRule::Own(uid) => format!("of {} (the user leakspy runs as)", describe_user(*uid)),
        UserRule::Users(uids) => {
            format!("of {}", uids.iter().map(|u| describe_user(*u)).collect::<Vec<_>>().join(", "))
        }
        UserRule::All => "of any user".into(),
    }
}

fn nothing_matched(pattern: &str, scan: &Scan, rule: &UserRule) -> LeakspyError {
    if scan.not_python.is_empty() && scan.other_users.is_empty() && scan.unreadable.is_empty() {
        return LeakspyError::NoMatchingProcess { pattern: pattern.to_string() };
    }
    let mut parts = Vec::new();
    if !scan.not_python.is_empty() {
        parts.push(format!("not Python: {}", passed_list(&scan.not_python, true)));
    }
    if !scan.unreadable.is_empty() {
        parts.push(format!("not readable by this user: {}", passed_list(&scan.unreadable, true)));
    }
    if !scan.other_users.is_empty() {
        let others: Vec<Passed> = scan.other_users.iter().map(|(p, _)| p.clone()).collect();
        parts.push(format!(
            "of other users, not selected without --user: {}; add {} (or --all-users) to read them",
            passed_list(&others, false),
            user_hint(&scan.other_users)
        ));
    }
    let detail = parts.join("; ");
    if scan.other_users.is_empty() && scan.unreadable.is_empty() {
        LeakspyError::NoPythonMatch { pattern: pattern.to_string(), detail }
    } else {
        LeakspyError::NoSelectableMatch { pattern: pattern.to_string(), whose: whose(rule), detail }
    }
}

/// Says on stderr which matching processes were passed over for belonging to other users:
/// a worker that dropped privileges is the usual one, and the user must learn to add --user.
fn note_passed_over(scan: &Scan, rule: &UserRule) {
    if scan.other_users.is_empty() {
        return;
    }
    let others: Vec<Passed> = scan.other_users.iter().map(|(p, _)| p.clone()).collect();
    eprintln!(
        "leakspy: note: {} matching processes of other users were not selected (only those {} are): {}; add {} \
         (or --all-users) to read them too",
        others.len(),
        whose(rule),
        terminal::message(&passed_list(&others, false)),
        user_hint(&scan.other_users)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_rules() {
        assert!(UserRule::Own(0).allows(0) && !UserRule::Own(0).allows(33));
        assert!(UserRule::Users(vec![33, 34]).allows(34) && !UserRule::Users(vec![33]).allows(0));
        assert!(UserRule::All.allows(12345));
    }

    #[test]
    fn a_pattern_matching_only_non_python_processes_names_them() {
        let scan = Scan {
            not_python: vec![Passed {
                pid: 7,
                cmdline: "sh -c gunicorn app".into(),
                why: "dash loads no libpython".into(),
            }],
            ..Scan::default()
        };
        let e = nothing_matched("gunicorn", &scan, &UserRule::Own(0));
        assert_eq!(e.exit_code(), 5);
        let text = e.to_string();
        assert!(text.contains("7 (sh -c gunicorn app: dash loads no libpython)"), "{text}");
        let scan = Scan {
            other_users: vec![(Passed { pid: 8, cmdline: "python3 app.py".into(), why: "uid 4242".into() }, 4242)],
            ..Scan::default()
        };
        let e = nothing_matched("app.py", &scan, &UserRule::Own(0));
        assert_eq!(e.exit_code(), 3);
        let text = e.to_string();
        assert!(text.contains("8 (python3 app.py, uid 4242)") && text.contains("add --user 4242"), "{text}");
        assert_eq!(nothing_matched("x", &Scan::default(), &UserRule::All).exit_code(), 3);
    }
}
