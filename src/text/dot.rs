//! Strings for Graphviz's DOT language (`why --format dot`). A quoted DOT string ends at the
//! first unescaped `"`, and in a label a backslash starts an escape of Graphviz's own (`\n`,
//! `\l`, `\N` for the node's name...). Names come from the target, escaped for a terminal
//! first (`terminal::name`, whose escapes are backslashes), so every backslash is doubled and
//! every quote escaped: the label shows the text as the terminal would, never a line break or
//! a node name Graphviz made of it.

/// `text` as a quoted DOT string (quotes included).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Never present after `terminal::name`; kept out of a quoted string all the same.
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lines of a label joined by DOT's centred line break, each quoted as [`quote`] does.
pub fn label(lines: &[String]) -> String {
    let quoted: Vec<String> = lines.iter().map(|l| quote(l)).collect();
    let inner: Vec<&str> = quoted.iter().map(|q| &q[1..q.len() - 1]).collect();
    format!("\"{}\"", inner.join("\\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes_cannot_end_the_string_or_make_escapes() {
        assert_eq!(quote(r#"a"b\nc"#), r#""a\"b\\nc""#);
        assert_eq!(quote("<b>{x}|"), "\"<b>{x}|\"");
        assert_eq!(label(&["T\"".into(), "2 objects".into()]), r#""T\"\n2 objects""#);
    }
}
