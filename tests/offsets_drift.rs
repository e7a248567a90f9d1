//! The checked-in python_offsets/*.toml must be exactly what scripts/gen_offsets.py derives
//! from the headers installed on this machine: a hand edit, a stale table, or a patch release
//! whose headers disagree with its minor version's table but has no variant table, fails here.

use std::path::Path;
use std::process::Command;

/// `true` if `program --version` runs.
fn available(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|out| out.status.success())
}

#[test]
fn offset_tables_match_the_installed_headers() {
    for program in ["python3", "gcc"] {
        assert!(
            available(program),
            "`{program}` is not on PATH: scripts/gen_offsets.py needs python3 and gcc to \
             check python_offsets/ (run scripts/setup.sh)"
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("scripts/gen_offsets.py"))
        .arg("--check")
        .current_dir(root)
        .output()
        .expect("running scripts/gen_offsets.py --check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "scripts/gen_offsets.py --check failed ({}); see its output above. A stale table is \
         fixed by `python3 scripts/gen_offsets.py` and reviewing the diff; header sets of one \
         version that disagree need a decision about which layout the table should carry",
        out.status
    );
}
