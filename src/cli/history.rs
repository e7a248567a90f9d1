//! `leakspy diff A B` and `leakspy trend HISTORY`: reading what earlier runs recorded.

use crate::analysis::diff::diff;
use crate::analysis::runs::Runs;
use crate::error::LeakspyError;
use crate::history::{census_time, for_each_record, load, parse_time};
use crate::output::report::{TrendReport, render_diff, render_trend, trend_report};
use crate::text::terminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The earlier census: a snapshot file, or HISTORY@N (1-based, -1 = last) or HISTORY@TIME.
    pub before: String,
    /// The later census, the same way.
    pub after: String,
    #[arg(long)]
    pub json: bool,
    /// Rows shown per section.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
}

#[derive(clap::Args)]
pub struct TrendArgs {
    /// A history file (`snapshot --append` or `attach --record`).
    pub history: PathBuf,
    /// Only records at or after TIME (RFC 3339, or a duration ago such as 24h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records at or before TIME.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Exit with code 9 if any type's count grows steadily by at least RATE objects per hour,
    /// so that a cron job can alert.
    #[arg(long, value_name = "RATE")]
    pub fail_if_growth: Option<f64>,
}

pub fn run_diff(args: DiffArgs) -> Result<(), LeakspyError> {
    let before = load(&args.before)?;
    let after = load(&args.after)?;
    let d = diff(&before, &after);
    if args.json {
        println!("{}", terminal::json(serde_json::to_string_pretty(&d).map_err(anyhow::Error::from)?));
    } else {
        print!("{}", render_diff(&d, args.top));
    }
    Ok(())
}

pub fn run_trend(args: TrendArgs) -> Result<(), LeakspyError> {
    let since = args.since.as_deref().map(parse_time).transpose()?;
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let mut runs = Runs::default();
    let mut undated = 0;
    let skipped = for_each_record(&args.history, |census| {
        let Some(at) = census_time(&census) else {
            undated += 1;
            return;
        };
        if since.is_some_and(|s| at < s) || until.is_some_and(|u| at > u) {
            return;
        }
        runs.push(&census, at);
    })?;
    skipped.warn(&args.history);
    if undated > 0 {
        eprintln!("leakspy: warning: {undated} records without a readable timestamp were skipped");
    }
    let report: TrendReport = trend_report(&runs, skipped.lines.len());
    if args.json {
        println!("{}", terminal::json(serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?));
    } else {
        print!("{}", render_trend(&report, &args.history.display().to_string()));
    }
    if let Some(threshold) = args.fail_if_growth {
        let crossed: Vec<String> = report
            .runs
            .iter()
            .flat_map(|run| {
                // Parts are types too: a threshold on any type's growth holds for them as well.
                let rates = run.suspects.iter().filter(|s| s.metric == "count").flat_map(|s| {
                    std::iter::once((s.name.as_str(), s.growth_per_hour))
                        .chain(s.parts.iter().map(|p| (p.name.as_str(), p.growth_per_minute * 60.0)))
                });
                rates.filter(move |(_, rate)| *rate >= threshold).map(move |(name, rate)| {
                    format!("{} grows by {rate:.0}/h in PID {}", terminal::name(name), run.info.pid)
                })
            })
            .collect();
        if !crossed.is_empty() {
            return Err(LeakspyError::GrowthThreshold {
                detail: format!("{} (threshold {threshold}/h)", crossed.join("; ")),
            });
        }
    }
    Ok(())
}
