//! The ways a user installs leakspy, each taken as a user would and then used on a real target:
//! the pip wheel (into a fresh virtual environment, with pipx and uv where present), `cargo
//! install`, the static binary (from an empty root and from another distribution's root), and
//! the shell completions and man pages the binary prints.
//!
//! Each build is made once per run: the wheel by maturin and the static binary by
//! scripts/build-static.sh, both in this work tree's target directory, so what `cargo test
//! --release` compiled is reused.

mod common;

use common::scratch::Scratch;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Where scripts/setup.sh installs maturin, auditwheel, pipx and uv (tests/install-tools.txt).
fn tools_dir() -> PathBuf {
    std::env::var_os("LEAKSPY_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/leakspy/tools"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(REPO).join("target"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Per type, the count a census gives: what every build must agree on for a blocked target.
fn counts(census: &Value) -> BTreeMap<String, u64> {
    census["types"]
        .as_array()
        .map(|types| {
            types.iter().filter_map(|t| Some((t["type"].as_str()?.to_string(), t["count"].as_u64()?))).collect()
        })
        .unwrap_or_default()
}

/// Runs `snapshot PID --json` through `cmd` (a binary, or chroot and a binary) and parses it.
fn census_by(mut cmd: Command, pid: i32) -> Value {
    let out = run(cmd.args(["snapshot", &pid.to_string(), "--json"]));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{cmd:?}: bad JSON: {e}"))
}

/// The census a build gives of `target` must be the one the target took of itself (its total
/// and its own classes) and, type by type, the one the test's own build gives.
fn check_census(what: &str, census: &Value, target: &Target, reference: &Value) {
    assert_eq!(
        census["objects_total"], target.truth["objects_total"],
        "{what}: objects_total against the target's own"
    );
    for own in target.truth["own_types"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        assert_eq!(
            type_count(census, own),
            target.truth["types"][own]["count"].as_u64(),
            "{what}: {own} against the target's own count"
        );
    }
    assert_eq!(counts(census), counts(reference), "{what}: per-type counts differ from the test build's");
}

/// A target on the newest host interpreter (a blocked census_target: its heap holds still), and
/// the census the test's own build takes of it.
fn census_target() -> (Target, Value) {
    let interp = newest_host_python();
    let target = Target::start(&interp, "census_target.py", &[]);
    let reference = snapshot_json(target.pid).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
    (target, reference)
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                found.push(rel.to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// The wheel, built as a user builds the file to upload: `pip wheel .` through maturin, asked
/// for the manylinux tag (pip's build otherwise tags it for this machine only).
fn build_wheel(tools: &Path, out: &Path) -> PathBuf {
    let path = format!("{}:{}", tools.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    run(Command::new(tools.join("bin/python"))
        .args(["-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "-w"])
        .arg(out)
        .current_dir(REPO)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("MATURIN_PEP517_ARGS", "--compatibility manylinux_2_34"));
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "pip wheel made {wheels:?}");
    wheels[0].clone()
}

/// The platform tag auditwheel says the wheel is consistent with.
fn auditwheel_tag(tools: &Path, wheel: &Path) -> String {
    let out = run(Command::new(tools.join("bin/auditwheel")).arg("show").arg(wheel));
    let text = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let tag = text
        .split("following platform tag: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("auditwheel did not name a tag: {text}"));
    tag.to_string()
}

#[test]
fn pip_wheel_installs_leakspy_into_a_fresh_environment() {
    let tools = tools_dir();
    if !tools.join(".leakspy-requirements").exists() {
        println!("no wheel tools at {} (scripts/setup.sh installs them from PyPI); skipping", tools.display());
        return;
    }
    let scratch = Scratch::new("wheel");
    let wheel = build_wheel(&tools, &scratch.join("dist"));
    let name = wheel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let size = std::fs::metadata(&wheel).map(|m| m.len()).unwrap_or(0);

    // auditwheel accepts it as manylinux, with the tag the wheel carries.
    let tag = auditwheel_tag(&tools, &wheel);
    assert!(tag.starts_with("manylinux"), "auditwheel: {tag}");
    assert!(name.contains(&tag), "the wheel {name} is not tagged {tag}, the tag auditwheel finds");
    println!("wheel {name}: {size} bytes, auditwheel: {tag}");

    let (target, reference) = census_target();

    // A fresh environment of an interpreter present: the wheel puts leakspy in its bin/.
    let python = newest_host_python();
    let venv = scratch.join("venv");
    run(Command::new(&python.exe).args(["-m", "venv"]).arg(&venv));
    let before = files_under(&venv);
    let pip = venv.join("bin/pip");
    run(Command::new(&pip).args(["install", "--no-index", "--disable-pip-version-check"]).arg(&wheel));
    let installed = venv.join("bin/leakspy");
    assert!(installed.is_file(), "pip install put no bin/leakspy in the environment");
    let census = census_by(Command::new(&installed), target.pid);
    check_census(&format!("pip wheel in a {} venv", python.label), &census, &target, &reference);

    // Uninstalling leaves the environment as it was.
    run(Command::new(&pip).args(["uninstall", "-y", "--disable-pip-version-check", "leakspy"]));
    let after: Vec<PathBuf> =
        files_under(&venv).into_iter().filter(|p| !p.components().any(|c| c.as_os_str() == "__pycache__")).collect();
    let before: Vec<PathBuf> =
        before.into_iter().filter(|p| !p.components().any(|c| c.as_os_str() == "__pycache__")).collect();
    assert_eq!(after, before, "pip uninstall left files behind");

    // pipx and uv install the same wheel as a tool of its own.
    let pipx_bin = scratch.join("pipx-bin");
    run(Command::new(tools.join("bin/pipx"))
        .arg("install")
        .arg(&wheel)
        .env("PIPX_HOME", scratch.join("pipx"))
        .env("PIPX_BIN_DIR", &pipx_bin)
        .env("PIPX_MAN_DIR", scratch.join("pipx-man")));
    let census = census_by(Command::new(pipx_bin.join("leakspy")), target.pid);
    check_census("pipx install", &census, &target, &reference);

    let uv_bin = scratch.join("uv-bin");
    run(Command::new(tools.join("bin/uv"))
        .args(["tool", "install", "--offline", "--python"])
        .arg(&python.exe)
        .arg(&wheel)
        .env("UV_TOOL_DIR", scratch.join("uv-tools"))
        .env("UV_TOOL_BIN_DIR", &uv_bin)
        .env("UV_CACHE_DIR", scratch.join("uv-cache"))
        .env("UV_PYTHON_DOWNLOADS", "never"));
    let census = census_by(Command::new(uv_bin.join("leakspy")), target.pid);
    check_census("uv tool install", &census, &target, &reference);
}

#[test]
fn cargo_install_puts_a_working_leakspy_in_its_root() {
    let scratch = Scratch::new("cargo");
    // The work tree's target directory: what the test build compiled is not compiled again.
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["install", "--quiet", "--offline", "--locked", "--path", REPO, "--root"])
        .arg(&*scratch)
        .env("CARGO_TARGET_DIR", target_dir()));
    let (target, reference) = census_target();
    let census = census_by(Command::new(scratch.join("bin/leakspy")), target.pid);
    check_census("cargo install", &census, &target, &reference);
}

/// Runs `binary` inside `root` (chroot) with the host's /proc bind-mounted there, in a mount
/// namespace of its own so the mount ends with it: the static binary has nothing else.
fn in_root(root: &Path, binary_inside: &str) -> Command {
    let proc_dir = root.join("proc");
    std::fs::create_dir_all(&proc_dir).expect("create proc in the root");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind /proc \"$1\" && shift && exec chroot \"$@\"",
        "sh",
    ])
    .arg(&proc_dir)
    .arg(root)
    .arg(binary_inside);
    cmd
}

#[test]
fn static_binary_runs_from_an_empty_root() {
    let built = Command::new("bash").arg(Path::new(REPO).join("scripts/build-static.sh")).current_dir(REPO).output();
    let built = built.expect("run scripts/build-static.sh");
    if built.status.code() == Some(3) {
        println!("skipping: {}", String::from_utf8_lossy(&built.stderr).trim());
        return;
    }
    assert!(built.status.success(), "build-static.sh failed: {}", String::from_utf8_lossy(&built.stderr));
    let binary = Path::new(REPO).join(String::from_utf8_lossy(&built.stdout).trim());
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);

    // No interpreter (loader) and no shared library: ldd says so.
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    let said = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
    assert!(said.contains("not a dynamic executable") || said.contains("statically linked"), "ldd: {said}");
    println!("static binary {}: {size} bytes; ldd: {}", binary.display(), said.trim());

    let (target, reference) = census_target();

    // An empty root: the binary and /proc, nothing else (no libc, no /etc, no /tmp).
    let scratch = Scratch::new("static");
    let root = scratch.join("root");
    std::fs::create_dir_all(&root).expect("create the empty root");
    std::fs::copy(&binary, root.join("leakspy")).expect("copy the static binary");
    let census = census_by(in_root(&root, "/leakspy"), target.pid);
    check_census("static binary in an empty root", &census, &target, &reference);
    assert_eq!(files_under(&root), vec![PathBuf::from("leakspy")], "the empty root held more than the binary");

    // Another distribution's root (Debian sid), when setup made it.
    let sid = sid_root();
    if sid.join("usr/bin").is_dir() {
        let inside = format!("/tmp/leakspy-static-{}", std::process::id());
        let host_copy = sid.join(inside.trim_start_matches('/'));
        std::fs::copy(&binary, &host_copy).expect("copy the static binary into the sid root");
        let census = census_by(in_root(&sid, &inside), target.pid);
        let _ = std::fs::remove_file(&host_copy);
        check_census("static binary in the sid root", &census, &target, &reference);
    } else {
        println!("no sid root at {}: the static binary was run from the empty root only", sid.display());
    }
}

#[test]
fn completions_load_and_man_pages_render() {
    // bash: the script loads and registers a completion for leakspy.
    let script = format!("source <('{LEAKSPY}' completions bash) && complete -p leakspy");
    let out = run(Command::new("bash").args(["-c", &script]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("-F _leakspy leakspy"), "{out:?}");

    // The other shells' scripts parse where the shell is present, and name the commands.
    for (shell, check) in [
        ("zsh", Some(&["zsh", "-n"][..])),
        ("fish", Some(&["fish", "--no-execute"][..])),
        ("elvish", None),
        ("powershell", None),
    ] {
        let out = run(Command::new(LEAKSPY).args(["completions", shell]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("snapshot") && text.contains("pid-file"), "{shell}: {text}");
        match check {
            Some(argv) if Command::new(argv[0]).arg("--version").output().is_ok() => {
                let scratch = Scratch::new(shell);
                let file = scratch.join(format!("leakspy.{shell}"));
                std::fs::write(&file, text.as_bytes()).expect("write the completion script");
                run(Command::new(argv[0]).args(&argv[1..]).arg(&file));
                println!("{shell}: completion script parses");
            }
            Some(argv) => println!("{shell}: not installed here, its script is not parsed ({})", argv[0]),
            None => {}
        }
    }

    // Every page renders without a warning, with man if present, else with groff.
    let scratch = Scratch::new("man");
    run(Command::new(LEAKSPY).args(["man", "--dir"]).arg(&*scratch));
    let pages = files_under(&scratch);
    assert!(pages.len() >= 10, "{pages:?}");
    let have_man = Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success());
    for page in &pages {
        let path = scratch.join(page);
        let out = if have_man {
            run(Command::new("man")
                .args(["--warnings=w", "-l"])
                .arg(&path)
                .env("MANWIDTH", "80")
                .env("MANPAGER", "cat"))
        } else {
            run(Command::new("groff").args(["-man", "-Tutf8", "-ww"]).arg(&path))
        };
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(out.stderr.is_empty(), "{}: warnings: {}", page.display(), String::from_utf8_lossy(&out.stderr));
        assert!(rendered.contains("NAME") && rendered.contains("leakspy"), "{}: {rendered}", page.display());
    }
    // The page printed on stdout is the top-level one.
    let out = run(Command::new(LEAKSPY).arg("man"));
    assert_eq!(Some(out.stdout), std::fs::read(scratch.join("leakspy.1")).ok());
}
