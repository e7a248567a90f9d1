//! `leakspy report INPUT... -o report.html`: recordings (`attach --record`) and histories
//! (`snapshot --append`) as one self-contained HTML page, one section per process run.

use crate::analysis::runs::Runs;
use crate::error::LeakspyError;
use crate::heap::census::Census;
use crate::history::{Extra, HoldsRecord, WhyRecord, census_time, for_each_entry};
use crate::memory::proc_info::ProcessInfo;
use crate::output::files::{Destination, write_output};
use crate::output::html::{ReportInput, ReportRun, render_html};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Recordings and history files, in time order (a run continued in a second file comes
    /// after the first).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Where to write the HTML ("-" for stdout). A new file is 0600 unless --mode says
    /// otherwise; an existing one is replaced atomically.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Permissions of the file written, in octal (0644 to share it).
    #[arg(long, value_parser = crate::output::files::parse_mode)]
    pub mode: Option<u32>,
    /// Rows of each run's top-types table (every suspect is listed as well).
    #[arg(long, default_value_t = 25)]
    pub top: usize,
}

pub fn run(args: ReportArgs) -> Result<(), LeakspyError> {
    let mut runs = Runs::default();
    let mut last: Vec<Option<Census>> = Vec::new();
    let mut whys: Vec<WhyRecord> = Vec::new();
    let mut holds: Vec<HoldsRecord> = Vec::new();
    let mut skipped_lines = 0;
    let mut undated = 0;
    // Per process (PID, start time, host): when its recording's sampling began, so that
    // samples that carry attach's own timing are placed by it.
    let mut origins: HashMap<(i32, String, String), SystemTime> = HashMap::new();
    for input in &args.inputs {
        let skipped = for_each_entry(
            input,
            |census| {
                let Some(at) = census_time(&census) else {
                    undated += 1;
                    return;
                };
                let at = match census.elapsed_s.filter(|e| e.is_finite() && *e >= 0.0) {
                    Some(elapsed) => {
                        let since = Duration::from_secs_f64(elapsed);
                        let info = census.process.clone().unwrap_or_default();
                        let key = (census.pid, info.start_time, info.hostname);
                        let origin = *origins.entry(key).or_insert_with(|| at.checked_sub(since).unwrap_or(at));
                        origin + since
                    }
                    None => at,
                };
                let index = runs.push(&census, at);
                if last.len() <= index {
                    last.resize(index + 1, None);
                }
                last[index] = Some(census);
            },
            |extra| match extra {
                Extra::Why(why) => whys.push(*why),
                Extra::Holds(h) => holds.push(h),
            },
        )?;
        skipped.warn(input);
        skipped_lines += skipped.lines.len();
    }
    if undated > 0 {
        eprintln!("leakspy: warning: {undated} records without a readable timestamp were skipped");
    }
    if runs.runs.is_empty() {
        return Err(anyhow::anyhow!("no census records in {}", names(&args.inputs)).into());
    }
    let report_runs: Vec<ReportRun> = runs
        .runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            // A why or holds record belongs to the run of the same process (PID, host, start
            // time).
            let same_process = |pid: i32, process: Option<&ProcessInfo>| {
                pid == run.info.pid
                    && process.is_none_or(|p| p.start_time == run.info.start_time && p.hostname == run.info.hostname)
            };
            let run_holds = holds.iter().rev().find(|h| same_process(h.pid, h.process.as_ref()));
            ReportRun {
                run,
                last: last.get(i).and_then(Option::as_ref),
                whys: whys.iter().filter(|w| same_process(w.pid, w.process.as_ref())).collect(),
                suspects: run.series.suspects_with(run_holds.map(|h| h.holds.as_slice())),
            }
        })
        .collect();
    let input = ReportInput {
        sources: args.inputs.iter().map(|p| p.display().to_string()).collect(),
        runs: report_runs,
        generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        top: args.top,
        skipped_lines,
    };
    let page = render_html(&input);
    write_output(&Destination::from_arg(&args.output), page.as_bytes(), args.mode)?;
    Ok(())
}

fn names(inputs: &[PathBuf]) -> String {
    let names: Vec<String> = inputs.iter().map(|p| crate::text::terminal::name(&p.display().to_string())).collect();
    names.join(", ")
}
