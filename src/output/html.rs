//! `leakspy report`: one self-contained HTML page of recordings and histories, to attach to a
//! ticket or show in a postmortem. Everything is inline (styles, the SVG charts drawn by
//! `output::svg`, a few lines of script that sort the table): it opens from a mail attachment
//! on an offline laptop and asks the network for nothing.
//!
//! The numbers are those of the terminal commands, from the same analysis: the suspects and
//! their parts from `Series::suspects` (`analysis::culprits`), their rates and fitted lines
//! from `analysis::trend`, the findings from the last census (`analysis::findings`) and the
//! native-growth finding over the series. Every name in the page comes from a target and goes
//! through `text::html`.

use super::suspects::detail_lines;
use super::svg::{Axis, Chart, Line, Marker, PALETTE, Unit, legend, render};
use crate::analysis::findings::Finding;
use crate::analysis::runs::Run;
use crate::analysis::series::Suspect;
use crate::analysis::trend::MIN_SAMPLES;
use crate::heap::census::Census;
use crate::history::WhyRecord;
use crate::text::sparkline::sparkline;
use crate::text::{html, human_bytes, signed, thousands};
use std::fmt::Write;

/// Lines in the counts chart: the suspects first, then the most numerous types.
const CHART_LINES: usize = 8;
/// Top types drawn in the counts chart besides the suspects.
const CHART_TOP_TYPES: usize = 4;
/// Paths listed per `why` record.
const WHY_PATHS: usize = 15;
/// Width of a suspect's sparkline, in characters.
const SPARK_WIDTH: usize = 40;

/// One process run as the report shows it.
pub struct ReportRun<'a> {
    pub run: &'a Run,
    /// The run's last census (its types, sizes and findings).
    pub last: Option<&'a Census>,
    /// Who held its suspects' instances (`attach --why-top`), if recorded.
    pub whys: Vec<&'a WhyRecord>,
    /// Its leak suspects: grouped with what attach's graph pass saw, when the recording holds
    /// it, else by growth alone (as `trend`).
    pub suspects: Vec<Suspect>,
}

pub struct ReportInput<'a> {
    /// The files read, as named on the command line.
    pub sources: Vec<String>,
    pub runs: Vec<ReportRun<'a>>,
    /// When the report was made (RFC 3339).
    pub generated: String,
    /// Rows of the top-types table.
    pub top: usize,
    /// Lines of the inputs that were not records.
    pub skipped_lines: usize,
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #d0d4da;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 6px}
section.run{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:4px 18px 16px;margin:20px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0}
dl.facts dt{color:#555}dl.facts dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;word-break:break-all}
.chart{margin:10px 0 18px}.chart .log{display:none}
.logtoggle:checked ~ .lin{display:none}.logtoggle:checked ~ .log{display:block}
.chart-title{font-weight:600;margin:6px 0}
svg text{font:11px system-ui,sans-serif;fill:#333}svg text.axis{font-size:12px;fill:#111}svg text.marker{font-size:11px}
ul.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px}
ul.legend .swatch{display:inline-block;width:14px;height:4px;margin-right:6px;vertical-align:middle}
ul.legend .name{font-family:ui-monospace,Menlo,Consolas,monospace}ul.legend .note{color:#555}ul.legend .key{color:#555}
.suspect{border-left:4px solid #D55E00;padding:4px 10px;margin:10px 0;background:#fffaf6}
.suspect .name,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.spark{font-family:ui-monospace,Menlo,Consolas,monospace;color:#D55E00;letter-spacing:-1px}
.detail{margin:2px 0 0 18px;color:#333;font-size:13px}
.finding{border-left:4px solid #0072B2;padding:4px 10px;margin:8px 0;background:#f5f9fd}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #e6e8eb;text-align:right}
th{background:#eef0f3;cursor:pointer;user-select:none;white-space:nowrap}th.sorted-asc::after{content:" ▲"}th.sorted-desc::after{content:" ▼"}
td.t,th.t{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
tr.is-suspect td{background:#fff3ea}
.muted{color:#666}.small{font-size:12px}
"#;

/// Sorts a table by the clicked column: numbers by their `data-v`, text by its content.
const SCRIPT: &str = r#"
document.querySelectorAll("table.sortable").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, col){
    th.addEventListener("click", function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var desc = !th.classList.contains("sorted-desc");
      table.querySelectorAll("th").forEach(function(h){ h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(desc ? "sorted-desc" : "sorted-asc");
      rows.sort(function(a, b){
        var x = a.cells[col], y = b.cells[col];
        var vx = x.dataset.v, vy = y.dataset.v, r;
        if (vx !== undefined && vy !== undefined) { r = parseFloat(vx) - parseFloat(vy); }
        else { r = x.textContent.localeCompare(y.textContent); }
        return desc ? -r : r;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"#;

/// How suspects are called, in words, for the header.
const METHOD: &str = "A type is called a leak suspect when its count grows steadily: the Mann-Kendall test \
finds a rising trend over the whole series and over its recent half (so a cache that filled and stopped, or a \
warm-up jump, is not called), and the Theil-Sen growth over the series is large against the scatter around \
the fitted line and against the level itself (so sawtooth churn and a plateau that jitters are not called). \
The rate shown is the Theil-Sen slope, drawn as the dashed line. Types that grow together are grouped: the \
type whose instances are the leak leads, and the containers and callables growing with it are listed as its \
parts or holders. A type whose count is flat while its references grow is called on its refcount sum. \
Samples read while the target's garbage collector ran are left out when they counted fewer objects than the samples before them (the collector held some on a list of its own: low, not a change).";

/// The whole page.
pub fn render_html(input: &ReportInput) -> String {
    let mut out = String::with_capacity(256 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    // Nothing but the page itself: no request leaves it, whatever a name in it says.
    out.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">");
    let _ = write!(out, "<title>leakspy report: {}</title>", html::escape(&title(input)));
    let _ = write!(out, "<style>{STYLE}</style></head><body><main>");
    let _ = write!(out, "<h1>leakspy report</h1><p class=\"muted\">{}</p>", html::escape(&title(input)));
    header(&mut out, input);
    if input.runs.len() > 1 {
        overview(&mut out, input);
    }
    for (i, r) in input.runs.iter().enumerate() {
        run_section(&mut out, r, i, input.top);
    }
    let _ = writeln!(out, "</main><script>{SCRIPT}</script></body></html>");
    out
}

fn title(input: &ReportInput) -> String {
    let suspects: usize = input.runs.iter().map(|r| r.suspects.len()).sum();
    format!(
        "{} process run{}, {} samples, {} suspect{}",
        input.runs.len(),
        if input.runs.len() == 1 { "" } else { "s" },
        thousands(input.runs.iter().map(|r| r.run.series.samples_taken as u64).sum()),
        suspects,
        if suspects == 1 { "" } else { "s" }
    )
}

fn header(out: &mut String, input: &ReportInput) {
    out.push_str("<dl class=\"facts\">");
    let sources: Vec<String> = input.sources.iter().map(|s| html::name(s)).collect();
    let _ = write!(out, "<dt>read from</dt><dd>{}</dd>", sources.join("<br>"));
    let _ = write!(out, "<dt>report made</dt><dd>{}</dd>", html::escape(&input.generated));
    if let (Some(first), Some(last)) = (input.runs.first(), input.runs.last()) {
        let _ = write!(
            out,
            "<dt>time span</dt><dd>{} to {}</dd>",
            html::name(&first.run.info.first_timestamp),
            html::name(&last.run.info.last_timestamp)
        );
    }
    let restarts = input.runs.iter().filter(|r| r.run.info.restart_of.is_some()).count();
    let _ = write!(
        out,
        "<dt>process runs</dt><dd>{} ({restarts} restart{})</dd>",
        input.runs.len(),
        if restarts == 1 { "" } else { "s" }
    );
    if input.skipped_lines > 0 {
        let _ = write!(out, "<dt>skipped</dt><dd>{} lines that were not records</dd>", input.skipped_lines);
    }
    out.push_str("</dl>");
    let _ = write!(out, "<p class=\"small\"><b>How the suspects were called.</b> {METHOD}</p>");
}

/// Several runs: a table of them, and their objects on one time axis with restarts marked.
fn overview(out: &mut String, input: &ReportInput) {
    out.push_str("<h2>Process runs</h2><table class=\"sortable\"><thead><tr><th class=\"t\">host</th><th>PID</th><th class=\"t\">command line</th><th class=\"t\">first sample</th><th>samples</th><th>suspects</th><th class=\"t\">restart of</th></tr></thead><tbody>");
    for (i, r) in input.runs.iter().enumerate() {
        let info = &r.run.info;
        let _ = write!(
            out,
            "<tr><td class=\"t\">{}</td><td data-v=\"{}\"><a href=\"#run-{i}\">{}</a></td><td class=\"t\">{}</td><td class=\"t\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td class=\"t\">{}</td></tr>",
            html::name(&info.hostname),
            info.pid,
            info.pid,
            html::name(&info.cmdline),
            html::name(&info.first_timestamp),
            r.run.series.samples_taken,
            thousands(r.run.series.samples_taken as u64),
            r.suspects.len(),
            r.suspects.len(),
            info.restart_of.map_or_else(String::new, |p| format!("PID {p}"))
        );
    }
    out.push_str("</tbody></table>");
    let Some(origin) = input.runs.iter().map(|r| r.run.first_time()).min() else { return };
    let offset = |r: &Run| r.first_time().duration_since(origin).map_or(0.0, |d| d.as_secs_f64());
    let lines: Vec<Line> = input
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = offset(r.run);
            let s = &r.run.series;
            Line {
                name: format!("PID {} on {}", r.run.info.pid, r.run.info.hostname),
                color: PALETTE[i % PALETTE.len()],
                points: s.times().iter().zip(s.objects()).map(|(t, v)| (at + t, *v as f64)).collect(),
                fit: None,
                axis: Axis::Left,
                note: String::new(),
            }
        })
        .collect();
    let markers: Vec<Marker> = input
        .runs
        .iter()
        .filter_map(|r| {
            r.run
                .info
                .restart_of
                .map(|was| Marker { at: offset(r.run), label: format!("restart: PID {was} → {}", r.run.info.pid) })
        })
        .collect();
    let origin_text = input.runs.iter().map(|r| r.run.info.first_timestamp.as_str()).min().unwrap_or_default();
    let chart = Chart {
        title: "GC-tracked objects of every run",
        left_label: "GC-tracked objects",
        left_unit: Unit::Count,
        right_label: "",
        right_unit: Unit::Bytes,
        lines: &lines,
        markers: &markers,
        x_range: None,
        x_origin: origin_text,
    };
    chart_block(out, &chart, "overview");
}

/// A chart with its log-scale toggle (pure CSS) and legend.
fn chart_block(out: &mut String, chart: &Chart, id: &str) {
    let _ = write!(
        out,
        "<div class=\"chart\"><div class=\"chart-title\">{}</div><input type=\"checkbox\" class=\"logtoggle\" id=\"log-{id}\"><label for=\"log-{id}\" class=\"small\"> log scale</label><div class=\"lin\">{}</div><div class=\"log\">{}</div>{}</div>",
        html::escape(chart.title),
        render(chart, false),
        render(chart, true),
        legend(chart)
    );
}

fn rate_text(per_minute: f64) -> String {
    if per_minute.abs() >= 10.0 {
        format!("{}/min ({}/h)", signed(per_minute.round() as i64), signed((per_minute * 60.0).round() as i64))
    } else {
        format!("{per_minute:+.2}/min ({:+.1}/h)", per_minute * 60.0)
    }
}

fn run_section(out: &mut String, r: &ReportRun, index: usize, top: usize) {
    let info = &r.run.info;
    let series = &r.run.series;
    let _ = write!(
        out,
        "<section class=\"run\" id=\"run-{index}\"><h2>PID {} on {}</h2><dl class=\"facts\">",
        info.pid,
        if info.hostname.is_empty() { "?".to_string() } else { html::name(&info.hostname) }
    );
    let _ = write!(out, "<dt>command line</dt><dd>{}</dd>", html::name(&info.cmdline));
    let _ = write!(out, "<dt>Python</dt><dd>{}</dd>", html::name(&info.python_version));
    if let Some(last) = r.last {
        let _ = write!(out, "<dt>interpreter</dt><dd>{}</dd>", html::name(&last.python_binary));
    }
    let _ = write!(out, "<dt>process started</dt><dd>{}</dd>", html::name(&info.start_time));
    let _ = write!(
        out,
        "<dt>samples</dt><dd>{} from {} to {}{}</dd>",
        thousands(series.samples_taken as u64),
        html::name(&info.first_timestamp),
        html::name(&info.last_timestamp),
        if series.overlapping_collection > 0 {
            format!(" ({} read during a garbage collection, left out)", series.overlapping_collection)
        } else {
            String::new()
        }
    );
    if let Some(was) = info.restart_of {
        let _ = write!(out, "<dt>restart</dt><dd>of PID {was}: a new series starts here</dd>");
    }
    out.push_str("</dl>");

    let suspects = &r.suspects;
    if series.kept_samples() < MIN_SAMPLES {
        let _ = write!(out, "<p>Too few samples for a trend (need {MIN_SAMPLES}).</p>");
    }
    counts_chart(out, r, suspects, index);
    memory_chart(out, r, index);

    out.push_str("<h3>Leak suspects</h3>");
    if suspects.is_empty() {
        out.push_str("<p>No leak suspects: no type grew steadily over the series.</p>");
    }
    for s in suspects {
        suspect_block(out, r, s);
    }
    let mut findings: Vec<Finding> = r.last.map(|c| c.findings.clone()).unwrap_or_default();
    findings.extend(series.native_growth());
    out.push_str("<h3>Findings</h3>");
    if findings.is_empty() {
        out.push_str("<p>None in the last sample.</p>");
    }
    for f in &findings {
        let _ = write!(
            out,
            "<div class=\"finding\" data-kind=\"{}\">{}</div>",
            html::escape(&f.kind),
            html::escape(&f.message)
        );
    }
    whys(out, r);
    top_types(out, r, suspects, top);
    out.push_str("</section>");
}

/// Counts over time: the suspects (with their fitted lines) and the most numerous types.
fn counts_chart(out: &mut String, r: &ReportRun, suspects: &[Suspect], index: usize) {
    let series = &r.run.series;
    let mut names: Vec<(String, bool)> = suspects.iter().map(|s| (s.name.clone(), true)).collect();
    names.truncate(CHART_LINES);
    let mut changes = series.changes();
    changes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    let room = CHART_LINES.saturating_sub(names.len()).min(CHART_TOP_TYPES);
    let others: Vec<(String, bool)> = changes
        .iter()
        .filter(|c| !names.iter().any(|(n, _)| *n == c.name))
        .take(room)
        .map(|c| (c.name.clone(), false))
        .collect();
    names.extend(others);
    let lines: Vec<Line> = names
        .iter()
        .enumerate()
        .filter_map(|(i, (name, suspect))| {
            let counts = series.counts_of(name)?;
            let trend = series.trend_of(name);
            let called = suspects.iter().find(|s| s.name == *name);
            Some(Line {
                name: name.clone(),
                color: PALETTE[i % PALETTE.len()],
                points: series.times().iter().zip(counts).map(|(t, v)| (*t, *v as f64)).collect(),
                fit: (*suspect).then_some(()).and(trend.as_ref()).map(|t| (t.slope_per_sec, t.intercept)),
                axis: Axis::Left,
                note: match called {
                    Some(s) if s.metric == "count" => format!("suspect, {}", rate_text(s.growth_per_minute)),
                    Some(_) => "suspect (references grow)".into(),
                    None => format!("{} now", thousands(*counts.last().unwrap_or(&0))),
                },
            })
        })
        .collect();
    let chart = Chart {
        title: "Objects per type over time: leak suspects and the most numerous types",
        left_label: "objects",
        left_unit: Unit::Count,
        right_label: "",
        right_unit: Unit::Count,
        lines: &lines,
        markers: &[],
        x_range: None,
        x_origin: &format!("the first sample ({})", r.run.info.first_timestamp),
    };
    chart_block(out, &chart, &format!("counts-{index}"));
    let drawn = series.kept_samples();
    if drawn < series.samples_taken {
        let _ = write!(
            out,
            "<p class=\"small muted\">The series holds {} of the {} samples (older ones thinned evenly as the recording grew); each line draws at most {} points.</p>",
            thousands(drawn as u64),
            thousands(series.samples_taken as u64),
            super::svg::MAX_DRAWN_POINTS
        );
    }
}

/// The process's resident memory against its GC-tracked objects: native growth shows as the
/// first climbing while the second stays flat.
fn memory_chart(out: &mut String, r: &ReportRun, index: usize) {
    let series = &r.run.series;
    let times = series.times();
    let mut lines = vec![Line {
        name: "GC-tracked objects".into(),
        color: PALETTE[0],
        points: times.iter().zip(series.objects()).map(|(t, v)| (*t, *v as f64)).collect(),
        fit: None,
        axis: Axis::Left,
        note: String::new(),
    }];
    if series.rss().iter().any(|&b| b > 0) {
        lines.push(Line {
            name: "resident memory (RSS)".into(),
            color: PALETTE[1],
            points: times.iter().zip(series.rss()).filter(|(_, b)| **b > 0).map(|(t, v)| (*t, *v as f64)).collect(),
            fit: None,
            axis: Axis::Right,
            note: String::new(),
        });
    }
    let chart = Chart {
        title: "Memory: resident set size against Python objects",
        left_label: "GC-tracked objects",
        left_unit: Unit::Count,
        right_label: "resident memory",
        right_unit: Unit::Bytes,
        lines: &lines,
        markers: &[],
        x_range: None,
        x_origin: &format!("the first sample ({})", r.run.info.first_timestamp),
    };
    chart_block(out, &chart, &format!("memory-{index}"));
}

fn suspect_block(out: &mut String, r: &ReportRun, s: &Suspect) {
    let what = if s.metric == "count" { "objects" } else { "references, count flat" };
    let values: Vec<f64> = match s.metric {
        "count" => r.run.series.counts_of(&s.name).map(|c| c.iter().map(|&v| v as f64).collect()).unwrap_or_default(),
        _ => Vec::new(),
    };
    let _ = write!(
        out,
        "<div class=\"suspect\" data-type=\"{}\"><span class=\"name\">{}</span>: <b>{}</b> {what} ({} over the series, {} now), confidence {:.0}% over {} samples <span class=\"spark\" title=\"counts over the samples\">{}</span>",
        html::name(&s.name),
        html::name(&s.name),
        html::escape(&rate_text(s.growth_per_minute)),
        signed(s.added),
        thousands(s.now),
        s.confidence * 100.0,
        s.samples,
        sparkline(&values, SPARK_WIDTH)
    );
    for line in detail_lines(&s.functions, &s.parts) {
        // Worded for a terminal (names escaped there), then made safe for HTML.
        let _ = write!(out, "<div class=\"detail mono\">{}</div>", html::escape(&line));
    }
    out.push_str("</div>");
}

/// Who holds the suspects' instances, as `attach --why-top` recorded it.
fn whys(out: &mut String, r: &ReportRun) {
    if r.whys.is_empty() {
        return;
    }
    out.push_str("<h3>Who holds them</h3>");
    for w in &r.whys {
        let Some(e) = &w.report.explanation else { continue };
        let name = w.report.type_name.as_deref().unwrap_or("objects");
        let _ = write!(
            out,
            "<p><span class=\"mono\">{}</span>: {} instances (traced {}), {} in themselves, <b>{} retained</b> (freed if they all went); read {}.</p>",
            html::name(name),
            thousands(e.instances),
            thousands(e.sampled),
            human_bytes(e.size_bytes),
            human_bytes(e.retained_bytes),
            html::name(&w.timestamp)
        );
        out.push_str("<table class=\"sortable why\"><thead><tr><th>instances</th><th class=\"t\">path (from the module globals or a frame)</th><th class=\"t\">held by</th><th>holder retains</th></tr></thead><tbody>");
        for p in e.paths.iter().take(WHY_PATHS) {
            let (holder, retained) = match &p.holder {
                Some(h) => (format!("{} at {}", html::name(&h.type_name), html::escape(&h.address)), h.retained_bytes),
                None => (String::new(), 0),
            };
            let _ = write!(
                out,
                "<tr><td data-v=\"{}\">{}</td><td class=\"t\">{}</td><td class=\"t\">{holder}</td><td data-v=\"{retained}\">{}</td></tr>",
                p.count,
                thousands(p.count),
                // Worded with the target's names escaped for a terminal (`heap::graph::render`).
                html::escape(&p.path),
                if retained > 0 { human_bytes(retained) } else { String::new() }
            );
        }
        out.push_str("</tbody></table>");
        if e.paths.len() > WHY_PATHS {
            let _ = write!(out, "<p class=\"small muted\">... and {} more paths.</p>", e.paths.len() - WHY_PATHS);
        }
        if e.unreachable > 0 {
            let _ = write!(
                out,
                "<p class=\"small\">{} are reachable from no module, frame or interpreter root: held by native code, or garbage cycles not yet collected.</p>",
                thousands(e.unreachable)
            );
        }
        if e.externally_held > 0 {
            let _ = write!(
                out,
                "<p class=\"small\">{} have references from outside the heap ({} in all) that no object or frame explains: native code.</p>",
                thousands(e.externally_held),
                thousands(e.external_refs)
            );
        }
    }
}

/// The most numerous types at the last sample (and every suspect), sortable.
fn top_types(out: &mut String, r: &ReportRun, suspects: &[Suspect], top: usize) {
    let series = &r.run.series;
    let mut changes = series.changes();
    changes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    let is_suspect = |name: &str| suspects.iter().any(|s| s.name == name || s.parts.iter().any(|p| p.name == name));
    let shown: Vec<_> =
        changes.iter().enumerate().filter(|(i, c)| *i < top || is_suspect(&c.name)).map(|(_, c)| c).collect();
    let sizes =
        r.last.map(|c| c.types.iter().map(|t| (t.name.as_str(), t)).collect::<std::collections::HashMap<_, _>>());
    let with_sizes = r.last.is_some_and(|c| c.types.iter().any(|t| t.size_bytes.is_some()));
    let _ = write!(
        out,
        "<h3>Top types</h3><p class=\"small muted\">At the last sample; {} of {} types (and every suspect and part). Click a column to sort.</p>",
        shown.len(),
        changes.len()
    );
    out.push_str("<table class=\"sortable types\"><thead><tr><th class=\"t\">type</th><th>count now</th><th>change</th><th>fitted growth/h</th><th>refcount sum</th>");
    if with_sizes {
        out.push_str("<th>size</th><th>retained</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for c in shown {
        let per_hour = series.trend_of(&c.name).map(|t| t.slope_per_sec * 3600.0);
        let _ = write!(
            out,
            "<tr{}><td class=\"t\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td>",
            if is_suspect(&c.name) { " class=\"is-suspect\"" } else { "" },
            html::name(&c.name),
            c.count,
            thousands(c.count),
            c.since_first,
            signed(c.since_first),
            per_hour.unwrap_or(0.0),
            per_hour.map_or_else(|| "–".into(), |g| signed(g.round() as i64)),
            c.refcount_sum,
            thousands(c.refcount_sum)
        );
        if with_sizes {
            let t = sizes.as_ref().and_then(|m| m.get(c.name.as_str()));
            for v in [t.and_then(|t| t.size_bytes), t.and_then(|t| t.retained_bytes)] {
                let _ =
                    write!(out, "<td data-v=\"{}\">{}</td>", v.unwrap_or(0), v.map(human_bytes).unwrap_or_default());
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}
