//! Analysis over time: pure functions over census series (no I/O), so they can be tested on
//! synthetic series and shared by `attach`, `trend` and `diff`.

pub mod culprits;
pub mod diff;
pub mod findings;
pub mod fleet;
pub mod runs;
pub mod series;
pub mod trend;
