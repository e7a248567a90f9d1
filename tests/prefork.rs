//! Pre-fork servers and pools, real ones from PyPI: gunicorn with sync workers (and with
//! `--max-requests`, which replaces workers), under a shell wrapper, uWSGI where it built, and
//! a `multiprocessing.Pool` whose workers leak. A load thread sends requests to 127.0.0.1
//! only, bounded in number and time. `attach --match` and `--children` must name the leaking
//! type in every worker, follow the workers that replace recycled ones, and `ps` must draw the
//! master with its workers under it. Also: `--match` run as root passes over processes of other
//! users unless `--user` names them.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const APP: &str = "prefork_app.py";
const LEAKING_TYPE: &str = "prefork_app.Order";

/// A server started for a test in a process group of its own: dropping it kills the group (the
/// master and every worker it forked), by the group's ID, which is the master's PID.
struct Server {
    child: Child,
    /// The unique directory the app runs from, as the server sees it: in every process's
    /// command line (--chdir), so `--match` with it selects this server only.
    tag: String,
    host_dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill takes no pointers; the group is the one this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.host_dir);
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A directory for the app, inside the interpreter's root (the chroot's for its pythons):
/// (as the server sees it, as the host sees it).
fn app_dir(lib: &LibraryPython) -> (String, PathBuf) {
    let tag = format!("/tmp/leakspy-prefork-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let host_root = lib.interp.chroot.clone().unwrap_or_else(|| PathBuf::from("/"));
    let host_dir = host_root.join(tag.trim_start_matches('/'));
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets").join(APP), host_dir.join(APP)).unwrap();
    (tag, host_dir)
}

/// Starts `program args` under `lib` (inside its chroot if it has one), in a new process
/// group, and waits until the app answers on `port`.
fn start_server(
    lib: &LibraryPython,
    tag: String,
    host_dir: PathBuf,
    port: u16,
    program: &str,
    args: &[String],
) -> Server {
    let mut cmd = match &lib.interp.chroot {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args).envs(lib.env.iter().map(|(k, v)| (*k, v))).stdin(Stdio::null()).stdout(Stdio::null());
    cmd.stderr(Stdio::from(std::fs::File::create(host_dir.join("server.log")).unwrap())).process_group(0);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{}: starting {program}: {e}", lib.interp.label));
    let server = Server { child, tag, host_dir, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/ok").is_none() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(server.host_dir.join("server.log")).unwrap_or_default();
            panic!("{}: {program} did not answer on port {port}; its log:\n{log}", lib.interp.label);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn gunicorn(lib: &LibraryPython, workers: u32, extra: &[&str], wrapped_in_shell: bool) -> Server {
    let (tag, host_dir) = app_dir(lib);
    let port = free_port();
    let python = lib.interp.exe.to_string_lossy().into_owned();
    let mut args: Vec<String> = vec![
        "-m".into(),
        "gunicorn".into(),
        "--chdir".into(),
        tag.clone(),
        "-w".into(),
        workers.to_string(),
        "-b".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("prefork_app:app".into());
    if wrapped_in_shell {
        // As Docker's shell-form CMD runs it: a shell that stays, with the server under it
        // (a second command keeps dash from exec-ing the first).
        let line = format!("{python} {}; exit $?", args.join(" "));
        start_server(lib, tag, host_dir, port, "/bin/sh", &["-c".into(), line])
    } else {
        start_server(lib, tag, host_dir, port, &python, &args)
    }
}

/// One GET; the body, or None if the server did not answer.
fn get(port: u16, path: &str) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1").then_some(response)
}

/// Runs `body` while two clients send GET /leak to 127.0.0.1:`port`, about 60 requests a
/// second in all, stopping after `body` returns or 120 s, whichever comes first.
fn under_load<T>(port: u16, body: impl FnOnce() -> T) -> (T, u64) {
    let stop = AtomicBool::new(false);
    let answered = AtomicU64::new(0);
    let result = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if get(port, "/leak").is_some() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(30));
                }
            });
        }
        let result = body();
        stop.store(true, Ordering::Relaxed);
        result
    });
    (result, answered.load(Ordering::Relaxed))
}

/// Runs leakspy; the JSON values it printed, and its stderr.
fn json_lines(args: &[&str]) -> (Vec<Value>, String) {
    let out = leakspy(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "leakspy {args:?} failed ({:?}): {stderr}", out.status.code());
    // One object per line; one process's census is pretty-printed, as snapshot always did.
    let lines = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))))
        .collect();
    (lines, stderr)
}

/// The per-process summary lines and the fleet's, from `attach --json` over several processes.
fn summaries(lines: &[Value]) -> (Vec<Value>, Value) {
    let fleet = lines.last().cloned().expect("a fleet summary line");
    assert_eq!(fleet["fleet"], true, "{fleet}");
    let per_process = lines.iter().filter(|l| l["summary"] == true && l["fleet"].is_null()).cloned().collect();
    (per_process, fleet)
}

/// The oldest and newest of the interpreters that have `modules`.
fn ends(modules: &[&str]) -> Vec<LibraryPython> {
    let all = library_pythons(modules);
    match all.as_slice() {
        [] => Vec::new(),
        [one] => vec![one.clone()],
        [first, .., last] => vec![first.clone(), last.clone()],
    }
}

fn worker_pids(ps: &[Value], master: i64) -> Vec<i64> {
    ps.iter().filter(|l| l["python_parent"] == master).filter_map(|l| l["pid"].as_i64()).collect()
}

/// gunicorn, 3 sync workers, a leaking route under load: `ps` shows the master with its three
/// workers under it; `snapshot --match` reads all four; `attach --match` names the leak in
/// each worker and across them, and not in the master.
#[test]
fn gunicorn_workers_each_show_the_leak() {
    for lib in ends(&["gunicorn", "flask"]) {
        let what = lib.interp.label.clone();
        let server = gunicorn(&lib, 3, &[], false);
        let master = server.child.id() as i64;

        let (ps, _) = json_lines(&["ps", "--json"]);
        let ours: Vec<Value> =
            ps.iter().filter(|l| l["cmdline"].as_str().unwrap_or("").contains(&server.tag)).cloned().collect();
        let workers = worker_pids(&ours, master);
        assert_eq!(ours.len(), 4, "{what}: ps lists master and 3 workers: {ours:?}");
        assert_eq!(workers.len(), 3, "{what}: the workers are under the master: {ours:?}");
        let master_line = ours.iter().find(|l| l["pid"] == master).expect("the master in ps");
        assert_eq!(master_line["depth"], 0, "{what}");
        assert!(ours.iter().filter(|l| l["pid"] != master).all(|l| l["depth"] == 1), "{what}: {ours:?}");
        assert!(
            master_line["python_version"].as_str().is_some_and(|v| v.starts_with(&format!("3.{}.", lib.interp.minor)))
        );
        let table = String::from_utf8_lossy(&leakspy(&["ps"]).stdout).into_owned();
        let drawn: Vec<&str> = table.lines().filter(|l| l.contains(&server.tag)).collect();
        assert!(drawn.len() == 4 && drawn[3].contains("└─ ") && drawn[1].contains("├─ "), "{what}:\n{table}");

        let (censuses, _) = json_lines(&["snapshot", "--match", &server.tag, "--json"]);
        let mut pids: Vec<i64> = censuses.iter().filter_map(|c| c["pid"].as_i64()).collect();
        pids.sort_unstable();
        let mut expected: Vec<i64> = workers.iter().copied().chain([master]).collect();
        expected.sort_unstable();
        assert_eq!(pids, expected, "{what}: one census per process");

        let ((lines, _), answered) = under_load(server.port, || {
            json_lines(&["attach", "--match", &server.tag, "--interval", "0.2", "--samples", "30", "--json"])
        });
        let (per_process, fleet) = summaries(&lines);
        println!("{what}: {answered} requests answered; fleet suspects {}", fleet["suspects"]);
        assert_eq!(per_process.len(), 4, "{what}");
        for p in &per_process {
            let suspects = count_suspects(&p["suspects"]);
            println!("{what}: {} {} {} samples: {suspects:?}", p["pid"], p["role"], p["samples"]);
            if p["pid"] == master {
                assert_eq!(p["role"], "master", "{what}");
                assert!(!suspects.iter().any(|s| s == LEAKING_TYPE), "{what}: the master serves nothing: {p}");
            } else {
                assert_eq!(p["role"], "worker", "{what}");
                assert!(suspects.iter().any(|s| s == LEAKING_TYPE), "{what}: worker {} names the leak: {p}", p["pid"]);
            }
        }
        let order = fleet["suspects"].as_array().unwrap().iter().find(|s| s["type"] == LEAKING_TYPE).cloned();
        let order = order.unwrap_or_else(|| panic!("{what}: the fleet summary names the leak: {fleet}"));
        assert_eq!((order["growing_in"].as_u64(), order["judged"].as_u64()), (Some(3), Some(3)), "{what}: {order}");
        assert_eq!(order["counted_as"], "workers", "{what}");
        assert_eq!(fleet["suspects"][0]["type"], LEAKING_TYPE, "{what}: the leak leads the fleet's suspects: {fleet}");
        // Every sample line says which process it is.
        assert!(
            lines.iter().filter(|l| l["sample"].is_u64()).all(|l| expected.contains(&l["pid"].as_i64().unwrap_or(0)))
        );

        // Prometheus: one series per process, each family written once.
        let out = leakspy(&["snapshot", "--match", &server.tag, "--format", "prometheus", "--top", "5"]);
        let prom = String::from_utf8_lossy(&out.stdout);
        assert_eq!(prom.matches("# TYPE leakspy_objects_total gauge").count(), 1, "{what}");
        for pid in &expected {
            assert!(prom.contains(&format!("leakspy_objects_total{{pid=\"{pid}\"")), "{what}: {pid} in\n{prom}");
        }

        // A command that reads one process asks for one.
        let out = leakspy(&["why", "--match", &server.tag]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains("select 4 Python processes") && err.contains(&master.to_string()), "{what}: {err}");
    }
}

/// gunicorn with --max-requests: workers are replaced every few seconds. attach follows the
/// replacements, keeps the series of the workers that exited, and still names the leak.
#[test]
fn gunicorn_recycled_workers_are_followed() {
    for lib in ends(&["gunicorn", "flask"]) {
        let what = lib.interp.label.clone();
        // About 25 requests a second per worker: a worker lives about 10 s, long enough for the
        // 8 samples a steady climb needs even when a host loaded by other work (a CI neighbour,
        // a compiler) spaces the samples a second apart.
        let server = gunicorn(&lib, 2, &["--max-requests", "250"], false);
        let ((lines, _), answered) = under_load(server.port, || {
            json_lines(&["attach", "--match", &server.tag, "--interval", "0.2", "--duration", "30s", "--json"])
        });
        let (per_process, fleet) = summaries(&lines);
        println!(
            "{what}: {answered} requests; {} processes, came {}, went {} (exited {}, replaced {}), judged {}; suspects {}",
            fleet["processes"],
            fleet["came"],
            fleet["went"],
            fleet["exited"],
            fleet["replaced"],
            fleet["judged"],
            fleet["suspects"]
        );
        for p in &per_process {
            println!(
                "{what}:   {} {} {} samples, {} (came later: {}): {:?}",
                p["pid"],
                p["role"],
                p["samples"],
                p["ended_because"],
                p["came_later"],
                count_suspects(&p["suspects"])
            );
        }
        assert!(fleet["came"].as_u64() >= Some(2), "{what}: replacement workers were followed: {fleet}");
        assert!(fleet["went"].as_u64() >= Some(2), "{what}: recycled workers were seen to go: {fleet}");
        let exited: Vec<&Value> = per_process.iter().filter(|p| p["ended_because"] == "exited").collect();
        assert!(exited.iter().all(|p| p["samples"].as_u64() > Some(0)), "{what}: their series were kept");
        let judged_workers: Vec<&Value> =
            per_process.iter().filter(|p| p["role"] == "worker" && p["judged"] == true).collect();
        let naming: Vec<&&Value> = judged_workers
            .iter()
            .filter(|p| count_suspects(&p["suspects"]).iter().any(|s| s == LEAKING_TYPE))
            .collect();
        assert!(
            naming.len() * 4 >= judged_workers.len() * 3 && !naming.is_empty(),
            "{what}: the leak is named within most workers' lives ({} of {})",
            naming.len(),
            judged_workers.len()
        );
        assert!(
            naming.iter().any(|p| p["came_later"] == true),
            "{what}: a worker that replaced a recycled one is judged on its own life"
        );
        let order = fleet["suspects"].as_array().unwrap().iter().find(|s| s["type"] == LEAKING_TYPE).cloned();
        assert!(order.is_some(), "{what}: the summary names the leak: {fleet}");
    }
}

/// The server under a shell that stays (Docker's shell form): --match passes over the shell
/// and reads the Python processes; --children of the shell's PID reads the processes under
/// it; a pattern only a shell matches names the shell in its error.
#[test]
fn a_server_under_a_shell_is_read_through_it() {
    let Some(lib) = ends(&["gunicorn", "flask"]).pop() else { return };
    let server = gunicorn(&lib, 2, &[], true);
    let shell = server.child.id() as i64;
    let (censuses, _) = json_lines(&["snapshot", "--match", &server.tag, "--json"]);
    let pids: Vec<i64> = censuses.iter().filter_map(|c| c["pid"].as_i64()).collect();
    assert_eq!(pids.len(), 3, "master and 2 workers: {pids:?}");
    assert!(!pids.contains(&shell), "the shell is not read");
    let (children, _) = json_lines(&["snapshot", &shell.to_string(), "--children", "--json"]);
    let mut under: Vec<i64> = children.iter().filter_map(|c| c["pid"].as_i64()).collect();
    let mut matched = pids.clone();
    under.sort_unstable();
    matched.sort_unstable();
    assert_eq!(under, matched, "--children of the shell: the Python processes under it");
    let out = leakspy(&["snapshot", &shell.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("are read with --children") && err.contains(&pids[0].to_string()), "the shell's PID: {err}");

    let mut sleeper =
        Command::new("sh").args(["-c", &format!("sleep 60; : {}-shell-only", server.tag)]).spawn().unwrap();
    let out = leakspy(&["snapshot", "--match", &format!("{}-shell-only", server.tag)]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("no Python process's command line contains") && err.contains(&sleeper.id().to_string()),
        "{err}"
    );
    assert!(err.contains("loads no libpython"), "{err}");
}

/// uWSGI (master and 2 workers, the app loaded in the master before the fork), where it built.
#[test]
fn uwsgi_workers_each_show_the_leak() {
    let libs: Vec<LibraryPython> = library_pythons(&["flask"])
        .into_iter()
        .filter(|l| l.interp.chroot.is_none() && l.interp.exe.with_file_name("uwsgi").exists())
        .collect();
    if libs.is_empty() {
        println!("uWSGI is not installed in any virtual environment (scripts/setup.sh builds it): skipping");
        return;
    }
    let ends = match libs.as_slice() {
        [one] => vec![one.clone()],
        [first, .., last] => vec![first.clone(), last.clone()],
        [] => unreachable!(),
    };
    for lib in ends {
        let what = format!("{} uWSGI", lib.interp.label);
        let (tag, host_dir) = app_dir(&lib);
        let port = free_port();
        let venv = lib.interp.exe.parent().and_then(Path::parent).unwrap().to_string_lossy().into_owned();
        let uwsgi = lib.interp.exe.with_file_name("uwsgi").to_string_lossy().into_owned();
        let args: Vec<String> = [
            "--master",
            "--processes",
            "2",
            "--http-socket",
            &format!("127.0.0.1:{port}"),
            "--chdir",
            &tag,
            "--module",
            "prefork_app:app",
            "--virtualenv",
            &venv,
            "--disable-logging",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = start_server(&lib, tag, host_dir, port, &uwsgi, &args);
        let master = server.child.id() as i64;
        let (ps, _) = json_lines(&["ps", "--json"]);
        let ours: Vec<Value> =
            ps.iter().filter(|l| l["cmdline"].as_str().unwrap_or("").contains(&server.tag)).cloned().collect();
        assert_eq!(worker_pids(&ours, master).len(), 2, "{what}: ps shows 2 workers under the master: {ours:?}");
        let ((lines, _), answered) = under_load(server.port, || {
            json_lines(&["attach", "--match", &server.tag, "--interval", "0.2", "--samples", "30", "--json"])
        });
        let (per_process, fleet) = summaries(&lines);
        println!("{what}: {answered} requests; fleet suspects {}", fleet["suspects"]);
        let workers: Vec<&Value> = per_process.iter().filter(|p| p["role"] == "worker").collect();
        assert_eq!(workers.len(), 2, "{what}: {per_process:?}");
        for w in workers {
            let suspects = count_suspects(&w["suspects"]);
            println!("{what}: worker {}: {suspects:?}", w["pid"]);
            assert!(suspects.iter().any(|s| s == LEAKING_TYPE), "{what}: worker {} names the leak: {w}", w["pid"]);
        }
    }
}

/// A multiprocessing.Pool whose workers leak, read with --children of the parent, and with
/// maxtasksperchild replacing the workers as they go.
#[test]
fn pool_workers_are_read_with_children_and_followed_when_replaced() {
    for interp in oldest_and_newest() {
        for recycle in [None, Some("150")] {
            let what =
                format!("{} pool{}", interp.label, recycle.map_or(String::new(), |n| format!(" maxtasksperchild={n}")));
            let args: Vec<&str> = recycle.into_iter().collect();
            let target = Target::start(&interp, "pool_target.py", &args);
            let leaking = target.truth["leaking_type"].as_str().unwrap().to_string();
            let duration = if recycle.is_some() { "20s" } else { "6s" };
            let (lines, _) = json_lines(&[
                "attach",
                &target.pid.to_string(),
                "--children",
                "--interval",
                "0.2",
                "--duration",
                duration,
                "--json",
            ]);
            let (per_process, fleet) = summaries(&lines);
            println!(
                "{what}: {} processes, came {}, went {}; suspects {}",
                fleet["processes"], fleet["came"], fleet["went"], fleet["suspects"]
            );
            let parent = per_process.iter().find(|p| p["pid"] == target.pid).expect("the parent is sampled");
            assert_eq!(parent["role"], "master", "{what}");
            let workers: Vec<&Value> = per_process.iter().filter(|p| p["ppid"] == target.pid).collect();
            let judged: Vec<&&Value> = workers.iter().filter(|w| w["judged"] == true).collect();
            assert!(judged.len() >= 3, "{what}: the 3 workers: {per_process:?}");
            let naming = judged.iter().filter(|w| count_suspects(&w["suspects"]).contains(&leaking)).count();
            for w in &workers {
                println!(
                    "{what}:   {} {} samples {}: {:?}",
                    w["pid"],
                    w["samples"],
                    w["ended_because"],
                    count_suspects(&w["suspects"])
                );
            }
            if recycle.is_some() {
                assert!(fleet["came"].as_u64() >= Some(1) && fleet["went"].as_u64() >= Some(1), "{what}: {fleet}");
                assert!(
                    naming * 4 >= judged.len() * 3,
                    "{what}: {naming} of {} judged workers name the leak",
                    judged.len()
                );
            } else {
                assert_eq!(naming, judged.len(), "{what}: every worker names the leak");
            }
            let shared = fleet["suspects"].as_array().unwrap();
            assert!(shared.iter().any(|s| s["type"] == leaking.as_str()), "{what}: {fleet}");
            // The workers exit when the parent's pipes close (dropping the target kills it).
            drop(target);
        }
    }
}

/// Run as root, `--match` passes over another user's processes unless --user (or
/// --all-users) names them; a PID given outright is read whoever's it is.
#[test]
fn match_passes_over_other_users_unless_asked() {
    if unsafe { libc::geteuid() } != 0 {
        println!("not root: nothing to check");
        return;
    }
    let python = Path::new("/usr/bin/python3");
    assert!(python.exists(), "/usr/bin/python3 is needed (scripts/setup.sh installs it)");
    let dir = std::env::temp_dir().join(format!("leakspy-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = dir.join("idle_target.py");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/idle_target.py"), &script).unwrap();
    let tag = format!("leakspy-other-user-{}", std::process::id());
    let start = |as_nobody: bool| -> Child {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(python);
            c
        } else {
            Command::new(python)
        };
        let mut child = cmd.arg(&script).arg(&tag).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut ready = [0u8; 6];
        child.stdout.as_mut().unwrap().read_exact(&mut ready).unwrap();
        child
    };
    let mut nobody = start(true);
    let out = leakspy(&["snapshot", "--match", &tag, "--json"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&nobody.id().to_string()) && err.contains("--user nobody"), "{err}");
    for flag in [&["--user", "nobody"][..], &["--user", "65534"], &["--all-users"]] {
        let mut args = vec!["snapshot", "--match", &tag, "--json"];
        args.extend_from_slice(flag);
        let out = leakspy(&args);
        assert!(out.status.success(), "{flag:?}: {}", String::from_utf8_lossy(&out.stderr));
        let census: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(census["pid"], nobody.id(), "{flag:?}");
    }
    let mut own = start(false);
    let (censuses, err) = json_lines(&["snapshot", "--match", &tag, "--json"]);
    assert_eq!(censuses.len(), 1, "{censuses:?}");
    let census = &censuses[0];
    assert_eq!(census["pid"], own.id(), "root's own process only");
    assert!(err.contains("not selected") && err.contains(&nobody.id().to_string()), "a note names the other: {err}");
    let (censuses, _) = json_lines(&["snapshot", "--match", &tag, "--json", "--all-users"]);
    assert_eq!(censuses.len(), 2);
    let out = leakspy(&["snapshot", "--match", &tag, "--user", "no-such-user-4711"]);
    assert_eq!(out.status.code(), Some(2), "an unknown user is a usage error");
    let out = leakspy(&["snapshot", &nobody.id().to_string(), "--user", "nobody"]);
    assert_eq!(out.status.code(), Some(2), "--user goes with --match only");
    for child in [&mut nobody, &mut own] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The live view over several processes under a real terminal (tmux): per type the total and
/// each worker's change, redrawn in place; Ctrl-C prints the summary across them.
#[test]
fn live_view_over_a_pool_and_its_summary() {
    let interp = supported_interpreters().pop().unwrap();
    let target = Target::start(&interp, "pool_target.py", &[]);
    let session = format!("leakspy-fleet-{}", std::process::id());
    let command = format!("{LEAKSPY} attach {} --children --interval 0.2; echo LEAKSPY_EXIT=$?; sleep 30", target.pid);
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux (scripts/setup.sh installs it)");
    let started = tmux(&["new-session", "-d", "-s", &session, "-x", "180", "-y", "60", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned();
    std::thread::sleep(Duration::from_secs(8));
    let during = screen();
    tmux(&["send-keys", "-t", &session, "C-c"]);
    std::thread::sleep(Duration::from_secs(2));
    let after = screen();
    tmux(&["kill-session", "-t", &session]);
    assert_eq!(during.matches("leakspy  4 processes (3 workers)").count(), 1, "redrawn in place:\n{during}");
    let row = during.lines().find(|l| l.contains("__main__.Order")).unwrap_or_default();
    assert!(row.starts_with("! __main__.Order") && row.contains("3/3"), "the leaking row:\n{during}");
    assert!(during.contains(&format!("m {}", target.pid)), "the parent's column is marked:\n{during}");
    assert!(after.contains("Sampling ended (interrupted)"), "{after}");
    assert!(after.contains("__main__.Order grows in 3 of 3 workers"), "{after}");
    assert!(after.contains("LEAKSPY_EXIT=0"), "{after}");
}
