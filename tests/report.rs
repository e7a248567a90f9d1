//! `leakspy report`, `attach --why-top` and `why --format dot` over real targets.
//!
//! On every interpreter, the hostile-names target (one class grows; others are named with
//! escape sequences, markup and quotes) is recorded by `attach --why-top 1`, and the report of
//! that recording must name the suspect with the rate `attach` found, show who holds it, draw
//! every sample, escape every name, and ask the network for nothing. Where Chromium is
//! installed (scripts/setup.sh), a report and a history with a restart are opened headless:
//! the page runs without errors, its DOM holds the suspects, the chart's points and the
//! restart, and its screenshot is not blank. Where Graphviz is, `why --format dot` must be
//! read by `dot`.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SAMPLES: &str = "12";
const INTERVAL: &str = "0.1";

fn scratch(name: &str) -> scratch::Scratch {
    scratch::Scratch::new(&format!("report-{name}"))
}

/// HTML's five characters as character references, as the report writes names.
fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// 1,234 with its sign, as the report writes rates.
fn signed(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{}{grouped}", if n < 0 { "-" } else { "+" })
}

/// The name as a terminal shows it: the target's own `repr()` without quotes for the hostile
/// types, and for the grower (whose repr quotes differently) spelt out by hand.
fn grower_shown(marker: &str) -> String {
    format!(r#"__main__.Grow\x1b]0;pwned\x07$(touch {marker})`touch {marker}`'"\n\u202e\\"#)
}

/// Records `target` with `attach --why-top 1` into `record`; returns the summary line.
fn record(target: &Target, record: &Path) -> Value {
    let pid = target.pid.to_string();
    let out = leakspy(&[
        "attach",
        &pid,
        "--interval",
        INTERVAL,
        "--samples",
        SAMPLES,
        "--json",
        "--record",
        record.to_str().expect("path"),
        "--why-top",
        "1",
    ]);
    assert!(out.status.success(), "{}: attach: {}", target.label, String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary line")
}

fn report(inputs: &[&Path], html: &Path, extra: &[&str]) -> String {
    let mut args = vec!["report"];
    args.extend(inputs.iter().map(|p| p.to_str().expect("path")));
    args.extend(["-o", html.to_str().expect("path")]);
    args.extend_from_slice(extra);
    let out = leakspy(&args);
    assert!(out.status.success(), "report: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(html).expect("report written")
}

/// Nothing in the page makes the browser ask the network: no URL in it at all, and no tag
/// with a `src` or `href` that is not a fragment or inline data.
fn assert_offline(what: &str, page: &str) {
    assert!(!page.contains("http://") && !page.contains("https://"), "{what}: a URL in the report");
    assert!(!page.contains("url("), "{what}: a CSS url()");
    for tag in page.split('<').skip(1).map(|t| t.split('>').next().unwrap_or_default()) {
        for attr in [" src=", " href=", " srcset=", " action="] {
            if let Some((_, value)) = tag.split_once(attr) {
                let value = value.trim_start_matches(['"', '\'']);
                assert!(value.starts_with('#') || value.starts_with("data:"), "{what}: <{tag}>");
            }
        }
    }
}

/// One interpreter: record, report, check.
fn check(interp: &Interpreter, dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let label = &interp.label;
    let marker = dir.join(format!("marker{n}"));
    let target = Target::start(interp, "hostile_names_target.py", &[marker.to_str().expect("path")]);
    let grower_name = target.truth["grower"].as_str().expect("grower").to_string();
    let recording = dir.join(format!("rec{n}.jsonl"));
    let summary = record(&target, &recording);
    drop(target);
    let html_path = dir.join(format!("report{n}.html"));
    let page = report(&[&recording], &html_path, &["--top", "100000"]);
    let what = format!("{label} report");

    // The suspect attach named, with its rate as the report words it.
    let suspect = summary["suspects"].as_array().and_then(|s| s.first()).unwrap_or_else(|| panic!("{what}: {summary}"));
    assert_eq!(suspect["type"].as_str(), Some(grower_name.as_str()), "{what}: {summary}");
    let rate = suspect["growth_per_minute"].as_f64().expect("rate");
    let rate_text = if rate.abs() >= 10.0 { signed(rate.round() as i64) } else { format!("{rate:+.2}") };
    let shown = html_escaped(&grower_shown(&marker.display().to_string()));
    let block = page
        .split("<div class=\"suspect\"")
        .skip(1)
        .find(|b| b.contains(&format!(">{shown}</span>")))
        .unwrap_or_else(|| panic!("{what}: no suspect block for {shown}"));
    assert!(
        block.contains(&format!("<b>{rate_text}/min")),
        "{what}: the rate attach found ({rate_text}/min) in:\n{block}"
    );

    // Who holds them: the path the target built, from `--why-top` in the recording.
    assert!(page.contains("Who holds them"), "{what}: no why section");
    assert!(page.contains("sys.modules[&#39;__main__&#39;].__dict__[&#39;GROWN&#39;][*]"), "{what}: no GROWN path");

    // Every sample kept is drawn (12 is far below the drawing's limit).
    let kept = summary["samples"].as_u64().unwrap_or(0) - summary["overlapping_collection"].as_u64().unwrap_or(0);
    assert!(page.contains(&format!("data-points=\"{kept}\" data-samples=\"{kept}\"")), "{what}: {kept} points");

    // Names: escaped, never raw markup; the only script is the report's own.
    for t in target_types(&recording) {
        assert!(!page.contains(&t) || !t.contains(['<', '>', '"', '&', '\x1b']), "{what}: raw name {t:?}");
    }
    assert_eq!(page.matches("<script").count(), 1, "{what}: a script element from a name");
    assert!(!page.contains("<img"), "{what}: an element from a name");
    assert!(page.contains("__main__.Html&lt;script&gt;alert(1)&lt;/script&gt;"), "{what}: the script name escaped");
    assert!(
        page.contains("__main__.Attr&quot;&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp;"),
        "{what}: the attribute name escaped"
    );
    assert_offline(&what, &page);
    assert!(!marker.exists(), "{what}: the marker was created");
    (recording, html_path)
}

/// Every type name the recording holds.
fn target_types(recording: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(recording).unwrap_or_default();
    let last: Value = text
        .lines()
        .rfind(|l| l.contains("\"schema_version\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    last["types"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["type"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// Opens `html` in headless Chromium: its DOM after the scripts ran, what it logged, and a
/// screenshot written to `png`.
fn chromium(html: &Path, png: &Path) -> (String, String) {
    let url = format!("file://{}", html.display());
    let base =
        ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"];
    let dom = Command::new("chromium").args(base).args(["--dump-dom", &url]).output().expect("chromium");
    let shot = Command::new("chromium")
        .args(base)
        .args(["--window-size=1200,1600", &format!("--screenshot={}", png.display()), &url])
        .output()
        .expect("chromium");
    assert!(shot.status.success() && png.exists(), "chromium screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    (String::from_utf8_lossy(&dom.stdout).into_owned(), String::from_utf8_lossy(&dom.stderr).into_owned())
}

/// A page's errors as Chromium logs them (its console and uncaught exceptions).
fn page_errors(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Refused to")).collect()
}

#[test]
fn reports_of_real_recordings_name_the_suspect_and_escape_every_name() {
    let dir = scratch("all");
    let interps = supported_interpreters();
    let mut made = Vec::new();
    // Three at a time: each is a target and a sampler, mostly asleep.
    for (chunk_index, chunk) in interps.chunks(3).enumerate() {
        let results: Vec<(PathBuf, PathBuf)> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, interp)| {
                    let dir = &dir;
                    scope.spawn(move || check(interp, dir, chunk_index * 3 + i))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("interpreter thread")).collect()
        });
        made.extend(results);
    }

    if !have("chromium") {
        println!("chromium not installed (scripts/setup.sh): the reports were not opened in a browser");
        return;
    }
    let (_, newest_html) = made.last().expect("a report");
    let png = dir.join("report.png");
    let (dom, log) = chromium(newest_html, &png);
    assert!(page_errors(&log).is_empty(), "the page logged errors: {:?}", page_errors(&log));
    assert!(
        dom.contains("class=\"suspect\"") && dom.contains("Who holds them"),
        "DOM: {}",
        &dom[..dom.len().min(2000)]
    );
    assert_eq!(dom.matches("<script").count(), 1);
    // Not blank: a screenshot of the same size of an empty page is a few KB.
    let empty = dir.join("empty.html");
    std::fs::write(&empty, "<!DOCTYPE html><html><body></body></html>").expect("empty page");
    let (_, _) = chromium(&empty, &dir.join("empty.png"));
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(size(&png) > 8 * size(&dir.join("empty.png")), "a blank screenshot: {} bytes", size(&png));
    println!("screenshot: {} ({} bytes)", png.display(), size(&png));
}

#[test]
fn a_history_with_a_restart_is_two_runs_with_the_restart_marked() {
    let dir = scratch("restart");
    let interp = newest_host_python();
    let history = dir.join("history.jsonl");
    let marker = dir.join("marker");
    // Two lives of one program: the second's records carry the first's command line, as a
    // service restarted by its supervisor does (a test target's path differs per start).
    let mut cmdline = None;
    let mut pids = Vec::new();
    for _ in 0..2 {
        let target = Target::start(&interp, "hostile_names_target.py", &[marker.to_str().expect("path")]);
        let part = dir.join("part.jsonl");
        let _ = std::fs::remove_file(&part);
        record(&target, &part);
        pids.push(target.pid);
        let mut text = String::new();
        for line in std::fs::read_to_string(&part).expect("part").lines() {
            let mut v: Value = serde_json::from_str(line).expect("record");
            if v["schema_version"].is_u64() {
                let own = v["process"]["cmdline"].clone();
                v["process"]["cmdline"] = cmdline.get_or_insert(own).clone();
            }
            text += &format!("{v}\n");
        }
        let mut all = std::fs::read_to_string(&history).unwrap_or_default();
        all += &text;
        std::fs::write(&history, all).expect("history");
    }
    let html = dir.join("restart.html");
    let page = report(&[&history], &html, &[]);
    assert!(page.contains("2 process runs"), "{}", &page[..page.len().min(3000)]);
    // Every line was a record: the why lines (their keys reordered by the rewrite) too.
    assert!(!page.contains("lines that were not records"), "{}", &page[..page.len().min(3000)]);
    assert_eq!(page.matches("<h3>Who holds them</h3>").count(), 2, "each run's why record");
    assert!(page.contains(&format!("restart: PID {} → {}", pids[0], pids[1])), "no restart marker");
    assert_eq!(page.matches("<section class=\"run\"").count(), 2);
    assert!(page.contains(&format!("of PID {}: a new series starts here", pids[0])));
    assert_offline("restart report", &page);
    if have("chromium") {
        let (dom, log) = chromium(&html, &dir.join("restart.png"));
        assert!(page_errors(&log).is_empty(), "the page logged errors: {:?}", page_errors(&log));
        assert!(dom.contains("class=\"restart\""), "the restart is drawn");
    }
}

#[test]
fn why_as_dot_is_read_by_graphviz_with_hostile_names_intact() {
    let dir = scratch("dot");
    let interp = newest_host_python();
    let marker = dir.join("marker");
    let target = Target::start(&interp, "hostile_names_target.py", &[marker.to_str().expect("path")]);
    let grower = target.truth["grower"].as_str().expect("grower").to_string();
    // A second of growth: the instances made so far are in GROWN, with a path to it.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let out = leakspy(&["why", &target.pid.to_string(), "--type", &grower, "--format", "dot"]);
    drop(target);
    assert!(out.status.success(), "why: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.starts_with("digraph why {") && text.contains("['GROWN']"), "{text}");
    assert!(!text.contains('\x1b') && !text.contains('\u{202e}'), "raw name in {text}");
    if !have("dot") {
        println!("graphviz not installed (scripts/setup.sh): the DOT text was not rendered");
        return;
    }
    let path = dir.join("why.dot");
    std::fs::write(&path, &text).expect("dot file");
    let svg = Command::new("dot").args(["-Tsvg", path.to_str().expect("path")]).output().expect("dot");
    assert!(svg.status.success(), "dot: {}", String::from_utf8_lossy(&svg.stderr));
    let svg = String::from_utf8_lossy(&svg.stdout);
    // The grower's label as drawn: the terminal's spelling (backslashes, quotes and all),
    // XML-escaped by dot (which writes "-" as a reference too), whole on its line.
    let shown = html_escaped(&grower_shown(&marker.display().to_string())).replace('-', "&#45;");
    assert!(svg.contains(&format!(">{shown}</text>")), "{shown} not drawn in:\n{svg}");
    assert!(svg.contains(">[&#39;GROWN&#39;]</text>"), "the step label in:\n{svg}");
}

#[test]
fn a_ten_thousand_sample_recording_stays_small_and_renders_fast() {
    let dir = scratch("big");
    let interp = newest_host_python();
    let marker = dir.join("marker");
    let target = Target::start(&interp, "hostile_names_target.py", &[marker.to_str().expect("path")]);
    let census = snapshot_json(target.pid).expect("a census");
    drop(target);
    // 10,000 samples a second apart made from the real census (its 30 largest types): one
    // type climbs by 2 a second, so the report must say +120/min.
    let mut template = census.clone();
    let types = template["types"].as_array_mut().expect("types");
    types.truncate(30);
    let climbing = types[0]["type"].as_str().expect("a type").to_string();
    let start = std::time::SystemTime::now() - std::time::Duration::from_secs(20_000);
    let mut text = String::new();
    for i in 0..10_000u64 {
        let mut line = template.clone();
        line["timestamp"] =
            Value::from(humantime::format_rfc3339_millis(start + std::time::Duration::from_secs(i)).to_string());
        line["types"][0]["count"] = Value::from(100_000 + 2 * i);
        text += &format!("{line}\n");
    }
    let history = dir.join("big.jsonl");
    std::fs::write(&history, text).expect("history");
    let html = dir.join("big.html");
    let page = report(&[&history], &html, &[]);
    let size = page.len();
    assert!(size < 1 << 20, "{size} bytes");
    assert!(page.contains("10,000 samples"), "the true count is stated");
    assert!(page.contains(r#"data-points="600""#), "drawn points are bounded");
    let climbing_shown = html_escaped(&climbing);
    assert!(page.contains(&format!(">{climbing_shown}</span>: <b>+120/min (+7,200/h)</b>")), "the rate");
    if have("chromium") {
        let empty = dir.join("empty.html");
        std::fs::write(&empty, "<!DOCTYPE html><html><body></body></html>").expect("empty page");
        let time = |page: &Path, png: &str| {
            let started = std::time::Instant::now();
            chromium(page, &dir.join(png));
            started.elapsed().as_secs_f64()
        };
        let (empty_s, big_s) = (time(&empty, "empty.png"), time(&html, "big.png"));
        println!("report of 10,000 samples: {size} bytes; Chromium {big_s:.2} s, {empty_s:.2} s for an empty page");
        assert!(big_s - empty_s < 2.0, "rendering took {big_s:.2} s against {empty_s:.2} s for an empty page");
    }
}

/// The leaks of tests/targets/leak_scenarios.py (reference cycles with the collector off, a
/// growing cache, unclosed files, captured closures, cycles with finalizers), each recorded by
/// `attach --why-top 1` on the newest interpreter on the host and reported: the report leads
/// with the suspect attach named (one the target says it leaks: the recording carries what
/// attach's graph pass saw), carries attach's findings and who holds the suspect, asks the
/// network for nothing, and opens in Chromium without errors and not blank.
#[test]
fn each_leak_scenario_s_report_leads_with_attach_s_suspect() {
    const SCENARIOS: &[&str] = &["cycles", "cache", "files", "closures", "del_cycles"];
    let dir = scratch("scenarios");
    let interp = newest_host_python();
    let browser = have("chromium");
    let problems: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = SCENARIOS
            .iter()
            .map(|&scenario| {
                let (dir, interp) = (&dir, &interp);
                scope.spawn(move || scenario_report_problems(interp, dir, scenario, browser))
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("scenario thread")).collect()
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn scenario_report_problems(interp: &Interpreter, dir: &Path, scenario: &str, browser: bool) -> Vec<String> {
    let what = format!("{} {scenario} report", interp.label);
    let target = Target::start(interp, "leak_scenarios.py", &[scenario]);
    let expected: Vec<String> = target.truth["leaking_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let recording = dir.join(format!("{scenario}.jsonl"));
    let pid = target.pid.to_string();
    let path = recording.to_str().expect("path");
    let args = ["attach", &pid, "--interval", "0.2", "--samples", "30", "--json", "--record", path, "--why-top", "1"];
    let out = leakspy(&args);
    drop(target);
    if !out.status.success() {
        return vec![format!("{what}: attach: {}", String::from_utf8_lossy(&out.stderr))];
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary line");
    let html = dir.join(format!("{scenario}.html"));
    let page = report(&[&recording], &html, &[]);
    let mut problems = Vec::new();
    let top = count_suspects(&summary["suspects"]).into_iter().next().unwrap_or_default();
    if !expected.contains(&top) {
        problems.push(format!("{what}: attach's top suspect {top:?}, the target leaks {expected:?}"));
    }
    let first_block = page.split("<div class=\"suspect\"").nth(1).unwrap_or_default();
    if !first_block.contains(&format!(">{}</span>", html_escaped(&top))) {
        problems.push(format!("{what}: the report's first suspect is not {top}: {first_block:.300}"));
    }
    for finding in summary["findings"].as_array().into_iter().flatten() {
        let message = finding["message"].as_str().unwrap_or_default();
        if !page.contains(&html_escaped(message)) {
            problems.push(format!("{what}: the finding {message:?} is not in the report"));
        }
    }
    // Who holds them: a path, or (garbage cycles the collector has not freed) none, said so.
    let why = &summary["why"][0];
    let held = why["paths"].as_array().is_some_and(|p| !p.is_empty());
    if !page.contains("Who holds them") || !(held || why["unreachable"].as_u64() > Some(0)) {
        problems.push(format!("{what}: nothing on who holds the suspect: {why}"));
    }
    assert_offline(&what, &page);
    println!(
        "{what}: suspect {top}, {} findings, {} bytes",
        summary["findings"].as_array().map_or(0, Vec::len),
        page.len()
    );
    if browser {
        let png = dir.join(format!("{scenario}.png"));
        let (dom, log) = chromium(&html, &png);
        if !page_errors(&log).is_empty() {
            problems.push(format!("{what}: the page logged errors: {:?}", page_errors(&log)));
        }
        if !dom.contains("class=\"suspect\"") {
            problems.push(format!("{what}: no suspect in the DOM"));
        }
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        if size < 50_000 {
            problems.push(format!("{what}: a screenshot of {size} bytes: blank?"));
        }
    }
    problems
}
