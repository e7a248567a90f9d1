//! Is this series growing, steadily, right now? Robust statistics over a census series, so
//! that GC sawtooths, warm-up jumps and caches that fill and then stay flat are not called
//! leaks, while a slow steady climb is.
//!
//! The test is a conjunction, each part ruling out one kind of false alarm:
//! - Mann-Kendall over the whole series: growth is a trend, not a few lucky samples;
//! - Mann-Kendall over the recent half: it is still growing (a cache that filled and stopped,
//!   or a warm-up jump, fails here);
//! - the Theil-Sen growth over the series is large against the scatter around the fitted line
//!   (a sawtooth's teeth are scatter; a leak's growth dominates its churn) and against the
//!   level itself (a plateau jittering by a few objects is not a leak);
//! - the Theil-Sen slope of the recent half is positive (on a plateau most pairs are ties, so
//!   its median slope is zero even when Mann-Kendall sees a drift of a few objects).

/// How sure a call must be: one-sided Mann-Kendall z for p < 0.01.
const Z_SIGNIFICANT: f64 = 2.326;
/// Growth must exceed this many robust standard deviations of the residuals.
const GROWTH_OVER_SCATTER: f64 = 3.0;
/// ...and this fraction of the series' median level.
const GROWTH_OVER_LEVEL: f64 = 0.005;
/// Pairwise statistics are quadratic: longer series are thinned evenly to this many points.
const MAX_POINTS: usize = 600;
/// Fewer samples than this cannot tell a trend from noise.
pub const MIN_SAMPLES: usize = 6;

#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    /// Theil-Sen slope, units per second.
    pub slope_per_sec: f64,
    /// The fitted line's value at time 0 (median of value - slope * time): with the slope,
    /// the growth line a report draws through the series.
    pub intercept: f64,
    /// Fitted growth from the first to the last sample.
    pub added: f64,
    /// Mann-Kendall z over the whole series and over its recent half.
    pub z_all: f64,
    pub z_recent: f64,
    /// Robust scatter (1.4826 * MAD) of the residuals around the Theil-Sen line.
    pub scatter: f64,
    pub samples: usize,
    /// Growing steadily: all three tests pass.
    pub growing: bool,
    /// 0..1, from the weaker of the two Mann-Kendall tests.
    pub confidence: f64,
}

/// Analyses (time in seconds, value) points; `None` with fewer than [`MIN_SAMPLES`].
pub fn analyse(points: &[(f64, f64)]) -> Option<Trend> {
    if points.len() < MIN_SAMPLES {
        return None;
    }
    let thinned = thin(points);
    let points = thinned.as_slice();
    let slope = theil_sen(points);
    let intercept = median(points.iter().map(|(t, v)| v - slope * t).collect());
    let residuals: Vec<f64> = points.iter().map(|(t, v)| v - (intercept + slope * t)).collect();
    let res_median = median(residuals.clone());
    let scatter = 1.4826 * median(residuals.iter().map(|r| (r - res_median).abs()).collect());
    let span = points[points.len() - 1].0 - points[0].0;
    let added = slope * span;
    let z_all = mann_kendall_z(points);
    let recent = &points[points.len() / 2..];
    let z_recent = if recent.len() >= MIN_SAMPLES / 2 { mann_kendall_z(recent) } else { 0.0 };
    // The recent half has half the samples, so for the same trend its z is about sqrt(2)
    // smaller; its bar is scaled down to match, but never below the 95% one-sided level.
    let recent_bar = (Z_SIGNIFICANT * std::f64::consts::FRAC_1_SQRT_2).max(1.645);
    let level = median(points.iter().map(|p| p.1).collect());
    let recent_slope = if recent.len() >= 2 { theil_sen(recent) } else { 0.0 };
    let growing = slope > 0.0
        && recent_slope > 0.0
        && z_all >= Z_SIGNIFICANT
        && z_recent >= recent_bar
        && added > (GROWTH_OVER_SCATTER * scatter.max(0.5)).max(GROWTH_OVER_LEVEL * level);
    let confidence = normal_cdf(z_all.min(z_recent * std::f64::consts::SQRT_2));
    Some(Trend {
        slope_per_sec: slope,
        intercept,
        added,
        z_all,
        z_recent,
        scatter,
        samples: points.len(),
        growing,
        confidence,
    })
}

fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let step = (points.len() - 1) as f64 / (MAX_POINTS - 1) as f64;
    (0..MAX_POINTS).map(|i| points[(i as f64 * step).round() as usize]).collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let upper = *m;
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = values[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// Median of pairwise slopes: robust to outliers and to a minority of wild samples.
fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, (t1, v1)) in points.iter().enumerate() {
        for (t2, v2) in &points[i + 1..] {
            if t2 != t1 {
                slopes.push((v2 - v1) / (t2 - t1));
            }
        }
    }
    median(slopes)
}

/// Mann-Kendall trend statistic as a z score (positive: increasing), with the variance
/// corrected for ties, which flat series have in plenty.
fn mann_kendall_z(points: &[(f64, f64)]) -> f64 {
    let n = points.len();
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            s += (points[j].1 - points[i].1).partial_cmp(&0.0).map_or(0, |o| o as i64);
        }
    }
    let mut values: Vec<f64> = points.iter().map(|p| p.1).collect();
    values.sort_by(|a, b| a.total_cmp(b));
    let mut tie_term = 0.0;
    let mut run = 1.0;
    for w in values.windows(2) {
        if w[0] == w[1] {
            run += 1.0;
        } else {
            tie_term += run * (run - 1.0) * (2.0 * run + 5.0);
            run = 1.0;
        }
    }
    tie_term += run * (run - 1.0) * (2.0 * run + 5.0);
    let nf = n as f64;
    let variance = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - tie_term) / 18.0;
    if variance <= 0.0 {
        return 0.0;
    }
    let s = s as f64;
    let corrected = if s > 0.0 {
        s - 1.0
    } else if s < 0.0 {
        s + 1.0
    } else {
        0.0
    };
    corrected / variance.sqrt()
}

/// Standard normal CDF (Abramowitz-Stegun 7.1.26 erf approximation, |error| < 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1).
    fn noise(i: usize) -> f64 {
        let x = (i as u64).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((x >> 33) as f64 / (1u64 << 31) as f64) - 1.0
    }

    fn series(n: usize, f: impl Fn(usize) -> f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64, f(i))).collect()
    }

    #[test]
    fn a_slow_steady_climb_under_churn_is_growing() {
        let s = series(30, |i| 10_000.0 + 20.0 * i as f64 + 150.0 * noise(i));
        let t = analyse(&s).unwrap();
        assert!(t.growing, "{t:?}");
        assert!((t.slope_per_sec - 20.0).abs() < 5.0, "{t:?}");
        assert!(t.confidence > 0.99);
    }

    #[test]
    fn flat_churn_is_not() {
        let t = analyse(&series(40, |i| 5_000.0 + 300.0 * noise(i))).unwrap();
        assert!(!t.growing, "{t:?}");
    }

    #[test]
    fn a_cache_that_fills_then_stays_flat_is_not() {
        let t = analyse(&series(40, |i| (i.min(12) * 1000) as f64 + 5.0 * noise(i))).unwrap();
        assert!(!t.growing, "{t:?}");
    }

    #[test]
    fn a_warm_up_jump_is_not() {
        let t = analyse(&series(30, |i| if i < 3 { 100.0 } else { 50_000.0 } + 20.0 * noise(i))).unwrap();
        assert!(!t.growing, "{t:?}");
    }

    #[test]
    fn a_sawtooth_is_not() {
        let t = analyse(&series(60, |i| ((i % 7) * 3000) as f64 + 50.0 * noise(i))).unwrap();
        assert!(!t.growing, "{t:?}");
    }

    #[test]
    fn a_plateau_drifting_by_a_few_objects_is_not() {
        // Recorded on a bounded cache under churn (3.15, 0.2 s apart): it fills, then jitters
        // by 3 objects with the higher values late; called a leak before the level and
        // recent-slope checks.
        let counts = [
            1221, 1486, 1757, 2022, 2169, 2169, 2172, 2172, 2169, 2169, 2169, 2169, 2172, 2169, 2169, 2169, 2172, 2172,
            2172, 2171, 2172, 2171, 2172, 2171, 2171, 2172, 2171, 2172, 2172, 2171, 2172, 2172, 2172, 2172, 2172, 2172,
            2172, 2172, 2172, 2172,
        ];
        let s: Vec<(f64, f64)> = counts.iter().enumerate().map(|(i, c)| (i as f64 * 0.2, *c as f64)).collect();
        let t = analyse(&s).unwrap();
        assert!(!t.growing, "{t:?}");
    }

    #[test]
    fn too_few_samples_say_nothing() {
        assert!(analyse(&series(3, |i| i as f64)).is_none());
    }

    #[test]
    fn long_series_are_thinned_not_quadratic() {
        let t = analyse(&series(20_000, |i| i as f64 * 0.5)).unwrap();
        assert_eq!(t.samples, MAX_POINTS);
        assert!(t.growing);
    }

    #[test]
    fn statistics_helpers() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-6);
        assert!((normal_cdf(2.326) - 0.99).abs() < 1e-3);
    }
}
