//! `leakspy ps` as a table: one line per Python process, the command line indented under its
//! nearest Python ancestor as `ps f` draws it.

use crate::text::{human_bytes, terminal, thousands};
use serde::Serialize;
use std::fmt::Write;

/// Longest command line shown in the table (the JSON has it whole).
const COMMAND_CHARS: usize = 120;

/// One Python process, as `ps` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PsLine {
    pub pid: i32,
    pub ppid: i32,
    /// The nearest ancestor that is a Python process too (a worker's master), if any.
    pub python_parent: Option<i32>,
    /// Levels under the root of its tree (0 for a root).
    pub depth: usize,
    /// The tree drawing before the command (`├─ `, `│  └─ `).
    #[serde(skip)]
    pub tree_prefix: String,
    pub user: String,
    pub uid: u32,
    pub python_version: String,
    pub rss_bytes: Option<u64>,
    pub uptime_s: Option<u64>,
    pub cmdline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
}

/// 59s, 12m03s, 3h04m, 2d05h.
fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d{:02}h", secs / 86400, secs / 3600 % 24),
    }
}

pub fn render(lines: &[PsLine], objects: bool) -> String {
    let mut out = String::new();
    if lines.is_empty() {
        let _ = writeln!(out, "No Python processes that this user may read.");
        return out;
    }
    let _ = write!(out, "{:>8} {:>8} {:<10} {:<8} {:>10} {:>7}", "PID", "PPID", "USER", "PYTHON", "RSS", "UPTIME");
    if objects {
        let _ = write!(out, " {:>12}", "OBJECTS");
    }
    let _ = writeln!(out, "  COMMAND");
    for l in lines {
        let _ = write!(
            out,
            "{:>8} {:>8} {:<10} {:<8} {:>10} {:>7}",
            l.pid,
            l.ppid,
            terminal::name_within(&l.user, 10),
            l.python_version,
            l.rss_bytes.map_or("?".into(), human_bytes),
            l.uptime_s.map_or("?".into(), uptime)
        );
        if objects {
            let _ = write!(out, " {:>12}", l.objects.map_or("?".into(), thousands));
        }
        let _ = writeln!(out, "  {}{}", l.tree_prefix, terminal::name_within(&l.cmdline, COMMAND_CHARS));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pid: i32, ppid: i32, depth: usize, prefix: &str, cmdline: &str) -> PsLine {
        PsLine {
            pid,
            ppid,
            python_parent: (depth > 0).then_some(ppid),
            depth,
            tree_prefix: prefix.into(),
            user: "www-data".into(),
            uid: 33,
            python_version: "3.11.7".into(),
            rss_bytes: Some(30 << 20),
            uptime_s: Some(725),
            cmdline: cmdline.into(),
            objects: Some(123_456),
        }
    }

    #[test]
    fn a_master_and_its_workers_read_as_a_tree_and_names_are_escaped() {
        let lines = [
            line(100, 1, 0, "", "gunicorn: master [app:app]"),
            line(101, 100, 1, "├─ ", "gunicorn: worker [app:app]"),
            line(102, 100, 1, "└─ ", "evil \x1b]0;x\x07"),
        ];
        let text = render(&lines, true);
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[0].contains("PID") && rows[0].contains("OBJECTS") && rows[0].ends_with("COMMAND"), "{text}");
        assert!(rows[1].ends_with("  gunicorn: master [app:app]"), "{text}");
        assert!(rows[2].ends_with("  ├─ gunicorn: worker [app:app]"), "{text}");
        assert!(rows[3].ends_with(r"  └─ evil \x1b]0;x\x07"), "{text}");
        assert!(rows[1].contains("30.0 MiB") && rows[1].contains("12m05s") && rows[1].contains("123,456"), "{text}");
        assert_eq!(uptime(59), "59s");
        assert_eq!(uptime(3 * 3600 + 240), "3h04m");
        assert_eq!(uptime(2 * 86400 + 5 * 3600), "2d05h");
        assert!(render(&[], false).contains("No Python processes"));
    }
}
