//! Sparklines: a series of counts as one line of block characters ("▁▂▃▅▇"), so that a
//! suspect's climb (or its sawtooth) shows at a glance in `attach`'s summary and in `trend`.

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` in at most `width` characters: each character is the mean of the values that fall
/// in it, scaled between the series' lowest and highest. A flat series is a flat line; an
/// empty one (or width 0) is empty.
pub fn sparkline(values: &[f64], width: usize) -> String {
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let cells = width.min(values.len());
    let means: Vec<f64> = (0..cells)
        .map(|c| {
            let from = c * values.len() / cells;
            let to = ((c + 1) * values.len() / cells).max(from + 1);
            values[from..to].iter().sum::<f64>() / (to - from) as f64
        })
        .collect();
    let low = means.iter().copied().fold(f64::INFINITY, f64::min);
    let high = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = high - low;
    means
        .iter()
        .map(|v| {
            if !range.is_finite() || range <= 0.0 {
                return BARS[0];
            }
            let level = ((v - low) / range * (BARS.len() - 1) as f64).round() as usize;
            BARS[level.min(BARS.len() - 1)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_climb_rises_and_a_flat_line_stays_low() {
        assert_eq!(sparkline(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 8), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[5.0; 4], 10), "▁▁▁▁");
        assert_eq!(sparkline(&[], 10), "");
    }

    #[test]
    fn long_series_are_averaged_into_the_width() {
        let values: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let line = sparkline(&values, 20);
        assert_eq!(line.chars().count(), 20);
        assert!(line.starts_with('▁') && line.ends_with('█'), "{line}");
    }
}
