//! A history file cut into runs: one series per process lifetime (host, PID, start time), so
//! that a restart starts a new series instead of looking like every type shrank to zero.

use super::series::{Series, Suspect};
use crate::heap::census::Census;
use serde::Serialize;
use std::time::SystemTime;

/// Who a run is, as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub hostname: String,
    pub pid: i32,
    pub start_time: String,
    pub cmdline: String,
    pub python_version: String,
    pub first_timestamp: String,
    pub last_timestamp: String,
    /// The PID of the previous run of the same command on the same host: a restart.
    pub restart_of: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub info: RunInfo,
    first_time: SystemTime,
    pub series: Series,
}

impl Run {
    /// When the run's first record was taken (a chart of several runs places them by it).
    pub fn first_time(&self) -> SystemTime {
        self.first_time
    }

    pub fn suspects(&self) -> Vec<Suspect> {
        self.series.suspects()
    }
}

#[derive(Debug, Default)]
pub struct Runs {
    pub runs: Vec<Run>,
}

impl Runs {
    /// Adds a record taken at `at`; records must come in time order (as a history file has
    /// them). Returns the index of the run it was added to.
    pub fn push(&mut self, census: &Census, at: SystemTime) -> usize {
        let info = census.process.clone().unwrap_or_default();
        let same_process = |r: &Run| {
            r.info.hostname == info.hostname && r.info.pid == census.pid && r.info.start_time == info.start_time
        };
        let index = match self.runs.iter().rposition(same_process) {
            Some(i) => i,
            None => {
                let restart_of = self
                    .runs
                    .iter()
                    .rev()
                    .find(|r| {
                        r.info.hostname == info.hostname && r.info.cmdline == info.cmdline && !info.cmdline.is_empty()
                    })
                    .map(|r| r.info.pid);
                self.runs.push(Run {
                    info: RunInfo {
                        hostname: info.hostname.clone(),
                        pid: census.pid,
                        start_time: info.start_time.clone(),
                        cmdline: info.cmdline.clone(),
                        python_version: census.python_version.clone(),
                        first_timestamp: census.timestamp.clone(),
                        last_timestamp: census.timestamp.clone(),
                        restart_of,
                    },
                    first_time: at,
                    series: Series::default(),
                });
                self.runs.len() - 1
            }
        };
        let run = &mut self.runs[index];
        let seconds = at.duration_since(run.first_time).map_or(0.0, |d| d.as_secs_f64());
        run.series.push(seconds, census);
        run.info.last_timestamp = census.timestamp.clone();
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::census::tests::census_with;
    use crate::memory::proc_info::ProcessInfo;
    use std::time::Duration;

    fn record(pid: i32, started: &str, count: u64) -> Census {
        let mut c = census_with(&[("Order", count, count)]);
        c.pid = pid;
        c.process = Some(ProcessInfo {
            start_time: started.into(),
            cmdline: "python app.py".into(),
            hostname: "web1".into(),
            rss_bytes: 0,
        });
        c
    }

    #[test]
    fn a_restart_starts_a_new_series() {
        let mut runs = Runs::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..10u64 {
            runs.push(&record(100, "a", 1000 + 50 * i), t0 + Duration::from_secs(3600 * i));
        }
        for i in 10..20u64 {
            runs.push(&record(200, "b", 10 + (i % 2)), t0 + Duration::from_secs(3600 * i));
        }
        assert_eq!(runs.runs.len(), 2);
        assert_eq!(runs.runs[1].info.restart_of, Some(100));
        let leak = runs.runs[0].suspects();
        assert_eq!(leak.len(), 1);
        assert!((leak[0].growth_per_minute * 60.0 - 50.0).abs() < 0.01, "{leak:?}");
        assert!(runs.runs[1].suspects().is_empty());
    }
}
