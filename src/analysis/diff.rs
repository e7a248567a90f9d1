//! What changed between two censuses, per type.

use crate::heap::census::Census;
use rustc_hash::FxHashMap;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TypeDiff {
    #[serde(rename = "type")]
    pub name: String,
    /// "new" (absent before), "vanished" (absent after) or "changed".
    pub status: &'static str,
    pub count_before: u64,
    pub count_after: u64,
    pub count_change: i64,
    pub refcount_change: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CensusDiff {
    pub from_timestamp: String,
    pub to_timestamp: String,
    pub from_pid: i32,
    pub to_pid: i32,
    pub objects_total_change: i64,
    /// Largest growth first; unchanged types left out.
    pub types: Vec<TypeDiff>,
}

pub fn diff(before: &Census, after: &Census) -> CensusDiff {
    let old: FxHashMap<&str, (u64, u64)> =
        before.types.iter().map(|t| (t.name.as_str(), (t.count, t.refcount_sum))).collect();
    let new: FxHashMap<&str, (u64, u64)> =
        after.types.iter().map(|t| (t.name.as_str(), (t.count, t.refcount_sum))).collect();
    let mut names: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    let mut types: Vec<TypeDiff> = names
        .into_iter()
        .filter_map(|name| {
            let (c1, r1) = old.get(name).copied().unwrap_or_default();
            let (c2, r2) = new.get(name).copied().unwrap_or_default();
            let status = match (old.contains_key(name), new.contains_key(name)) {
                (false, _) => "new",
                (_, false) => "vanished",
                _ if c1 == c2 && r1 == r2 => return None,
                _ => "changed",
            };
            Some(TypeDiff {
                name: name.to_string(),
                status,
                count_before: c1,
                count_after: c2,
                count_change: c2 as i64 - c1 as i64,
                refcount_change: r2 as i64 - r1 as i64,
            })
        })
        .collect();
    types.sort_by(|a, b| {
        b.count_change.cmp(&a.count_change).then(b.refcount_change.cmp(&a.refcount_change)).then(a.name.cmp(&b.name))
    });
    CensusDiff {
        from_timestamp: before.timestamp.clone(),
        to_timestamp: after.timestamp.clone(),
        from_pid: before.pid,
        to_pid: after.pid,
        objects_total_change: after.objects_total as i64 - before.objects_total as i64,
        types,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::census::tests::census_with;

    #[test]
    fn known_changes() {
        let a = census_with(&[("dict", 10, 20), ("Order", 5, 5), ("Gone", 3, 3), ("Same", 7, 7)]);
        let b = census_with(&[("dict", 8, 30), ("Order", 105, 105), ("New", 2, 2), ("Same", 7, 7)]);
        let d = diff(&a, &b);
        let rows: Vec<(&str, &str, i64, i64)> =
            d.types.iter().map(|t| (t.name.as_str(), t.status, t.count_change, t.refcount_change)).collect();
        assert_eq!(
            rows,
            [
                ("Order", "changed", 100, 100),
                ("New", "new", 2, 2),
                ("dict", "changed", -2, 10),
                ("Gone", "vanished", -3, -3)
            ]
        );
    }
}
