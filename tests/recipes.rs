//! The README's cron and systemd recipes, run as written (paths moved to a temporary
//! directory) against a real target whose command line matches them.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// The first code block after `<!-- recipe: NAME -->` in the README.
fn recipe(name: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let marker = format!("<!-- recipe: {name} -->");
    let after = &readme[readme.find(&marker).unwrap_or_else(|| panic!("README lacks {marker}"))..];
    let block = after.split("```").nth(1).expect("a code block after the marker");
    block.split_once('\n').map_or("", |(_, body)| body).to_string()
}

/// The command a recipe runs, pointed at this build and a scratch directory.
fn localise(command: &str, dir: &Path) -> String {
    command
        .replace("/usr/local/bin/leakspy", LEAKSPY)
        .replace("/var/lib/leakspy", dir.to_str().unwrap())
        .replace("/var/lib/node_exporter/textfile", dir.to_str().unwrap())
}

/// Runs `command` twice the way cron or systemd would: a shell, no inherited environment.
fn run_twice_and_check(command: &str, what: &str) {
    let dir = std::env::temp_dir().join(format!("leakspy-recipe-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A target whose command line contains "app.py", as the recipes expect.
    let interp = newest_host_python();
    let app = dir.join("app.py");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/idle_target.py"), &app).unwrap();
    let mut target = Command::new(&interp.exe).arg(&app).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(target.stdout.as_mut().unwrap(), &mut ready).unwrap();
    let command = localise(command, &dir);
    for _ in 0..2 {
        let out = Command::new("env").args(["-i", "sh", "-c", &command]).output().unwrap();
        assert!(out.status.success(), "{what}: {command}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 2, "{what}: one record per run");
    for line in history.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["pid"], target.id());
    }
    let prom = std::fs::read_to_string(dir.join("leakspy.prom")).unwrap();
    // --mode 0644 in the recipe: a node_exporter running as its own user reads the file.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("leakspy.prom")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644, "{what}: the .prom file's mode");
    assert!(prom.contains(&format!("leakspy_objects_total{{pid=\"{}\"", target.id())), "{what}:\n{prom}");
    let _ = target.kill();
    let _ = target.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One test for both recipes: each matches "app.py", so they must not run side by side.
#[test]
fn the_crontab_line_and_the_systemd_units_work_as_written() {
    crontab_line();
    systemd_units();
}

fn crontab_line() {
    let line = recipe("cron");
    let line = line.trim();
    // m h dom mon dow user command
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(fields.len(), 7, "{line}");
    assert_eq!(fields[0], "*/5");
    assert_eq!(fields[5], "root");
    run_twice_and_check(fields[6], "cron");
}

fn systemd_units() {
    let service = recipe("systemd-service");
    assert!(service.contains("Type=oneshot"), "{service}");
    let exec = service.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart line");
    run_twice_and_check(exec, "systemd");
    let timer = recipe("systemd-timer");
    for field in ["OnCalendar=*:0/5", "[Install]", "WantedBy=timers.target"] {
        assert!(timer.contains(field), "timer lacks {field}:\n{timer}");
    }
}
