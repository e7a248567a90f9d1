//! Text read from the target, made safe to put in an HTML document (`leakspy report`).
//!
//! A type name is whatever the target's code set `__qualname__` to: `<script>`, `"><img
//! onerror=...>`, an entity that reads as another name. An HTML report is opened in a browser
//! by the people handling an incident, so a name that reached it raw would run script in their
//! browser. Every name goes through [`name`]: first made unambiguous as on a terminal
//! (`terminal::name`: invisible and bidirectional characters escaped, the length bounded), then
//! the five characters HTML gives a meaning (`& < > " '`) written as character references,
//! which is safe in element text and in quoted attribute values alike.

use super::terminal;
use std::fmt::Write;

/// `text` with `&`, `<`, `>`, `"` and `'` written as character references: safe as element
/// text and inside a quoted attribute value. For text leakspy worded (a finding's sentence)
/// whose names were escaped for a terminal already.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // NUL is a parse error in HTML: shown as its escape instead.
            '\0' => out.push_str("\\x00"),
            c => out.push(c),
        }
    }
    out
}

/// A name read from the target, for HTML: [`terminal::name`] (visible, bounded), then
/// [`escape`].
pub fn name(s: &str) -> String {
    escape(&terminal::name(s))
}

/// Text for the content of an inline `<script>` holding JSON: `</script` or `<!--` in a
/// string would end or confuse the element, so every `<`, `>` and `&` is written as a JSON
/// escape (the same string once parsed).
pub fn script_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_text() {
        assert_eq!(escape(r#"<script>alert("x")</script>"#), "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;");
        assert_eq!(escape("a'b&c"), "a&#39;b&amp;c");
        assert_eq!(escape("x\0y"), r"x\x00y");
        // Already-escaped text is escaped again: what shows is what the target wrote.
        assert_eq!(escape("&lt;"), "&amp;lt;");
    }

    #[test]
    fn names_are_made_visible_then_escaped() {
        assert_eq!(name("Grow\x1b]0;x\x07\"<b>\n\u{202e}"), r"Grow\x1b]0;x\x07&quot;&lt;b&gt;\n\u202e");
        assert!(name(&"<".repeat(1000)).len() < 1000 * 4);
    }

    #[test]
    fn json_in_a_script_cannot_end_it() {
        let json = serde_json::to_string("</script><!--&").unwrap_or_default();
        let safe = script_json(&json);
        assert!(!safe.contains('<') && !safe.contains('>'), "{safe}");
        assert_eq!(serde_json::from_str::<String>(&safe).unwrap_or_default(), "</script><!--&");
    }
}
