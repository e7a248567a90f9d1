//! How a leak suspect's parts and code are worded under it, the same in `attach`'s summary and
//! live view and in `trend`. Every name comes from the target: shown through `terminal::name`.

use crate::analysis::culprits::{CodeSuspect, Part};
use crate::text::{terminal, thousands};

/// Objects per instance as a person reads them: "3", "0.5", "1.33".
pub fn per_instance(x: f64) -> String {
    let rounded = (x * 100.0).round() / 100.0;
    if (rounded - rounded.round()).abs() < 1e-9 {
        format!("{}", rounded.round() as i64)
    } else {
        let text = format!("{rounded:.2}");
        text.trim_end_matches('0').to_string()
    }
}

/// "closures of f.<locals>.g (app.py:12) capturing route (str), started (float), +1,433",
/// "bound methods Timer.on_done (app.py:40) of app.Timer, +1,378".
pub fn code_line(c: &CodeSuspect) -> String {
    let what = match c.kind {
        "closure" => "closures of",
        "bound_method" => "bound methods",
        _ => "functions",
    };
    let mut line = format!("{what} {} ({}:{})", terminal::name(&c.qualname), terminal::name(&c.file), c.line);
    if !c.captures.is_empty() {
        let captured: Vec<String> = c
            .captures
            .iter()
            .map(|v| match &v.type_name {
                Some(t) => format!("{} ({})", terminal::name(&v.name), terminal::name(t)),
                None => format!("{} (empty)", terminal::name(&v.name)),
            })
            .collect();
        line.push_str(&format!(" capturing {}", captured.join(", ")));
    }
    if let Some(first) = c.self_types.first() {
        line.push_str(&format!(" of {}", terminal::name(&first.name)));
        if c.self_types.len() > 1 {
            line.push_str(&format!(" (and {} other types)", c.self_types.len() - 1));
        }
    }
    line.push_str(&format!(", {} added", thousands(c.added.max(0) as u64)));
    line
}

/// One part as listed: "3 dict", "1 method (holding its sqlalchemy.orm.state.InstanceState)".
fn part_text(p: &Part) -> String {
    let mut text = format!("{} {}", per_instance(p.per_instance), terminal::name(&p.name));
    match (&p.of, p.relation) {
        (Some(of), "holder") => text.push_str(&format!(" (holding its {})", terminal::name(of))),
        (Some(of), _) => text.push_str(&format!(" (in its {})", terminal::name(of))),
        _ => {}
    }
    text
}

/// The lines under a suspect: the growing code (for `function` and `method`), what each
/// instance brings along, what holds each instance, and the code of parts that are functions
/// or bound methods.
pub fn detail_lines(functions: &[CodeSuspect], parts: &[Part]) -> Vec<String> {
    let mut lines: Vec<String> = functions.iter().map(code_line).collect();
    let with: Vec<String> = parts.iter().filter(|p| p.relation == "part" || p.of.is_some()).map(part_text).collect();
    if !with.is_empty() {
        lines.push(format!("each with {}", with.join(", ")));
    }
    let held_by: Vec<String> =
        parts.iter().filter(|p| p.relation == "holder" && p.of.is_none()).map(part_text).collect();
    if !held_by.is_empty() {
        lines.push(format!("each held by {}", held_by.join(", ")));
    }
    for p in parts {
        for c in &p.functions {
            lines.push(format!("{}: {}", terminal::name(&p.name), code_line(c)));
        }
    }
    lines
}

/// Short form for the live view, one line per suspect: "__main__.Invoice (each with 1 dict,
/// 1 list)", "function: closures of f.<locals>.g (app.py:3) capturing x (str), 1,200 added
/// (each with 2 cell, 1 tuple)"; the parts listed are the suspect's own (not its parts').
pub fn short(name: &str, functions: &[CodeSuspect], parts: &[Part]) -> String {
    let mut text = terminal::name(name);
    if let Some(code) = functions.first() {
        text.push_str(&format!(": {}", code_line(code)));
    }
    let mut said = Vec::new();
    for (relation, words) in [("part", "each with"), ("holder", "held by")] {
        let own: Vec<&Part> = parts.iter().filter(|p| p.of.is_none() && p.relation == relation).collect();
        if !own.is_empty() {
            let listed: Vec<String> = own.iter().take(4).map(|p| part_text(p)).collect();
            let more = if own.len() > 4 { ", ..." } else { "" };
            said.push(format!("{words} {}{more}", listed.join(", ")));
        }
    }
    if !said.is_empty() {
        text.push_str(&format!(" ({})", said.join("; ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::details::{Capture, SelfType};

    fn part(name: &str, per: f64, relation: &'static str, of: Option<&str>) -> Part {
        Part {
            name: name.into(),
            per_instance: per,
            growth_per_minute: 600.0 * per,
            added: 100,
            now: 150,
            relation,
            of: of.map(String::from),
            evidence: "graph",
            functions: Vec::new(),
        }
    }

    #[test]
    fn numbers_per_instance() {
        assert_eq!(per_instance(3.0), "3");
        assert_eq!(per_instance(0.5), "0.5");
        assert_eq!(per_instance(1.333), "1.33");
        assert_eq!(per_instance(0.999), "1");
    }

    #[test]
    fn the_short_form_names_code_parts_and_holders() {
        let code = CodeSuspect {
            qualname: "Timer.done".into(),
            file: "app.py".into(),
            line: 9,
            kind: "bound_method",
            growth_per_minute: 60.0,
            added: 12,
            now: 12,
            captures: Vec::new(),
            self_types: vec![SelfType { name: "app.Timer".into(), count: 12 }],
        };
        let parts =
            [part("list", 1.0, "part", None), part("tuple", 1.0, "holder", None), part("dict", 2.0, "part", Some("x"))];
        assert_eq!(
            short("method", &[code], &parts),
            "method: bound methods Timer.done (app.py:9) of app.Timer, 12 added (each with 1 list; held by 1 tuple)"
        );
        assert_eq!(short("m.\x1b", &[], &[]), r"m.\x1b");
    }

    #[test]
    fn parts_holders_and_code_are_worded_and_escaped() {
        let closure = CodeSuspect {
            qualname: "on_request.<locals>.timed".into(),
            file: "/srv/app.py".into(),
            line: 31,
            kind: "closure",
            growth_per_minute: 600.0,
            added: 1433,
            now: 1500,
            captures: vec![
                Capture { name: "route".into(), type_name: Some("str".into()) },
                Capture { name: "x\x1b[2J".into(), type_name: None },
            ],
            self_types: Vec::new(),
        };
        let mut method = part("method", 1.0, "holder", Some("m.State"));
        method.functions = vec![CodeSuspect {
            qualname: "State._cleanup".into(),
            file: "/lib/state.py".into(),
            line: 9,
            kind: "bound_method",
            growth_per_minute: 600.0,
            added: 1000,
            now: 1000,
            captures: Vec::new(),
            self_types: vec![SelfType { name: "m.State".into(), count: 1000 }],
        }];
        let lines =
            detail_lines(&[closure], &[part("cell", 2.0, "part", None), method, part("tuple", 1.0, "holder", None)]);
        assert_eq!(
            lines,
            vec![
                r"closures of on_request.<locals>.timed (/srv/app.py:31) capturing route (str), x\x1b[2J (empty), 1,433 added",
                "each with 2 cell, 1 method (holding its m.State)",
                "each held by 1 tuple",
                "method: bound methods State._cleanup (/lib/state.py:9) of m.State, 1,000 added",
            ]
        );
    }
}
