//! Text read from the target, made safe to show on a terminal.
//!
//! Every name leakspy shows comes from the process it reads: type, module and function
//! names, file names, dict keys, thread names, the command line, the paths of mapped files.
//! Whoever controls that process chooses them, and a terminal obeys what it is sent: an
//! escape sequence can set the window title, clear the screen, write the clipboard (OSC 52)
//! or, with some terminals, answer back; a newline or carriage return forges a line of
//! leakspy's own output; bidirectional overrides (U+202E) and invisible characters make a
//! name read as another one. So every such name goes through [`name`] before it is written
//! for a person; JSON and Prometheus output keep the exact text under their own escaping.
//!
//! The spelling is Python's `repr()`: `\t`, `\n`, `\r`, `\xHH` below U+0100, `\uHHHH` in the
//! Basic Multilingual Plane, `\UHHHHHHHH` above it, and a backslash as `\\`, so that what is
//! shown is unambiguous and reads back as a Python string literal would. Printable text of
//! any script (accented letters, CJK, emoji) is kept as it is. Invalid UTF-8 and lone
//! surrogates were already replaced with U+FFFD (�) where the text was decoded; that
//! character is visible and left alone.

/// Longest rendering of one name, in characters (escapes included): a 4,096-character type
/// name would otherwise push every other column off the screen.
pub const NAME_MAX_CHARS: usize = 200;

/// Ends a name that was cut at [`NAME_MAX_CHARS`].
pub const CUT_MARKER: char = '…';

/// The format characters (Unicode general category Cf) as of Unicode 17.0: soft hyphen,
/// bidirectional marks, embeddings, overrides and isolates, zero-width spaces and joiners,
/// word joiner and invisible operators, byte order mark, interlinear annotation, tags. None
/// of them has a glyph of its own; each can change how the text around it reads.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Characters outside Cf that still show nothing or look like something else: line and
/// paragraph separators (which some terminals break lines at), the spaces other than U+0020
/// (a name ending in U+00A0 looks like one ending in a space), invisible fillers and joiners
/// (combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation
/// selectors), and the private use areas, whose glyphs are whatever a font puts there.
const DISGUISING: &[(u32, u32)] = &[
    (0x00A0, 0x00A0),
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x1680, 0x1680),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0x3164, 0x3164),
    (0xE000, 0xF8FF),
    (0xFFA0, 0xFFA0),
    (0xF0000, 0x10FFFF),
];

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    ranges.iter().any(|&(low, high)| (low..=high).contains(&c))
}

/// True for a character a terminal may act on or that disguises the text around it: C0 and
/// C1 controls and DEL, format characters, separators and invisible or private-use ones.
/// The backslash is not one of them: it only needs escaping to keep escapes unambiguous.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || in_ranges(FORMAT, c) || in_ranges(DISGUISING, c)
}

/// How `c` is written when it is escaped.
fn push_escape(out: &mut String, c: char) {
    use std::fmt::Write;
    let _ = match c {
        '\\' => write!(out, "\\\\"),
        '\t' => write!(out, "\\t"),
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32),
        c if (c as u32) < 0x10000 => write!(out, "\\u{:04x}", c as u32),
        c => write!(out, "\\U{:08x}", c as u32),
    };
}

/// A name from the target as a terminal may show it: unsafe characters and backslashes
/// escaped (see the module documentation for the spelling), and at most
/// [`NAME_MAX_CHARS`] characters, the last of them [`CUT_MARKER`] when it was cut. The one
/// function through which names read from a target reach a person.
pub fn name(s: &str) -> String {
    name_within(s, NAME_MAX_CHARS)
}

/// [`name`] in at most `max_chars` characters (at least 1), for a column narrower than the
/// default bound. An escape is never cut in two: it goes whole or is left out for the marker.
pub fn name_within(s: &str, max_chars: usize) -> String {
    let max_chars = max_chars.max(1);
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    let mut width = 0;
    let mut piece = String::new();
    for (i, c) in s.char_indices() {
        piece.clear();
        if c == '\\' || is_unsafe(c) {
            push_escape(&mut piece, c);
        } else {
            piece.push(c);
        }
        let piece_chars = piece.chars().count();
        let last = i + c.len_utf8() == s.len();
        // The marker needs a place unless this piece ends the name.
        let room = if last { max_chars } else { max_chars - 1 };
        if width + piece_chars > room {
            out.push(CUT_MARKER);
            return out;
        }
        out.push_str(&piece);
        width += piece_chars;
    }
    out
}

/// A whole message (an error, a warning) that may carry text from the target somewhere in
/// it: unsafe characters are escaped as [`name`] does, while backslashes stay as they are,
/// since the message's own parts may already be escaped or quoted (a `{:?}` of a path, a
/// name passed through [`name`]). Not a substitute for [`name`], which is unambiguous: the
/// last line of defence before a message leaves for the terminal. Not bounded in length.
pub fn message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_unsafe(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON text as serde_json wrote it, with every unsafe character it left raw written as a
/// `\uXXXX` escape, so that JSON printed on a terminal is as harmless as the tables and still
/// exact. serde_json escapes only the C0 controls, quote and backslash inside strings: DEL,
/// C1 controls and the bidirectional and invisible characters stay raw. Outside its strings
/// JSON holds only ASCII punctuation, letters, digits and whitespace, so every such character
/// is inside a string, where its `\u` escape means the same character to any JSON reader.
/// Raw C0 characters left in the text are the pretty-printer's newlines: kept.
pub fn json(text: String) -> String {
    if !text.chars().any(|c| c >= ' ' && is_unsafe(c)) {
        return text;
    }
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len() + 64);
    for c in text.chars() {
        if c >= ' ' && is_unsafe(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing a terminal acts on or that hides text is left in `shown`.
    fn assert_inert(shown: &str) {
        assert!(!shown.chars().any(is_unsafe), "{shown:?}");
    }

    #[test]
    fn escape_sequences_are_shown_not_sent() {
        // CSI (clear screen), OSC 0 (window title), OSC 52 (clipboard), as sent.
        assert_eq!(name("a\x1b[2Jb"), r"a\x1b[2Jb");
        assert_eq!(name("\x1b]0;pwned\x07"), r"\x1b]0;pwned\x07");
        let osc52 = "x\x1b]52;c;ZWNobyBwd25lZA==\x1b\\y";
        assert_eq!(name(osc52), r"x\x1b]52;c;ZWNobyBwd25lZA==\x1b\\y");
        // The 8-bit forms: C1 CSI (U+009B), OSC (U+009D), string terminator (U+009C).
        assert_eq!(name("\u{9b}2J\u{9d}0;t\u{9c}"), r"\x9b2J\x9d0;t\x9c");
        assert_eq!(name("\u{7f}\u{0}\u{85}"), r"\x7f\x00\x85");
        for s in ["a\x1b[2Jb", "\x1b]0;pwned\x07", osc52, "\u{9b}2J"] {
            assert_inert(&name(s));
        }
    }

    #[test]
    fn forged_lines_stay_on_one_line() {
        let forged = "Order\n    1,000,000  1,000,000  __main__.Fake\r\tx";
        let shown = name(forged);
        assert_eq!(shown, r"Order\n    1,000,000  1,000,000  __main__.Fake\r\tx");
        assert!(!shown.contains(['\n', '\r', '\t']));
        assert_eq!(name("a\u{2028}b\u{2029}c"), r"a\u2028b\u2029c");
    }

    #[test]
    fn bidi_and_invisible_characters_are_shown() {
        assert_eq!(name("evil\u{202e}txt.exe"), r"evil\u202etxt.exe");
        for c in ['\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}'] {
            assert!(is_unsafe(c), "{c:?}");
        }
        for c in ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'] {
            assert!(is_unsafe(c), "{c:?}");
        }
        assert_eq!(name("Ord\u{200b}er\u{200c}\u{200d}\u{2060}\u{feff}"), r"Ord\u200ber\u200c\u200d\u2060\ufeff");
        assert_eq!(name("soft\u{ad}hyphen\u{a0}"), r"soft\xadhyphen\xa0");
        assert_eq!(name("tag\u{e0041}"), r"tag\U000e0041");
        assert_eq!(name("fill\u{3164}\u{e000}"), r"fill\u3164\ue000");
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_are_unambiguous() {
        assert_eq!(name(r"a\x1b"), r"a\\x1b");
        assert_ne!(name(r"a\x1b"), name("a\x1b"));
        assert_eq!(name("\\"), r"\\");
        // A message keeps its own backslashes but not the target's controls.
        assert_eq!(message("path \"a\\\"b\" \x1b[2J"), "path \"a\\\"b\" \\x1b[2J");
    }

    #[test]
    fn printable_text_of_any_script_is_kept() {
        for s in [
            "__main__.Order",
            "café.Crème",
            "模块.类",
            "データ.キャッシュ",
            "emoji.🚀Rocket",
            "hindi.नमस्ते",
            "a b<locals>.c[0]'\"",
            "\u{fffd}",
        ] {
            assert_eq!(name(s), s);
        }
    }

    #[test]
    fn long_names_are_cut_with_a_marker() {
        let long = "x".repeat(1 << 20);
        let shown = name(&long);
        assert_eq!(shown.chars().count(), NAME_MAX_CHARS);
        assert!(shown.ends_with(CUT_MARKER));
        let exact = "y".repeat(NAME_MAX_CHARS);
        assert_eq!(name(&exact), exact, "a name of exactly the bound is not cut");
        assert_eq!(name_within("abcdef", 4), "abc…");
        assert_eq!(name_within("abcd", 4), "abcd");
        // An escape goes whole or not at all.
        assert_eq!(name_within("ab\x1bcd", 5), "ab…");
        assert_eq!(name_within("ab\x1b", 6), r"ab\x1b");
        assert_eq!(name_within("abc", 0), "…");
        let hostile = "\x1b".repeat(10_000);
        let shown = name(&hostile);
        assert!(shown.chars().count() <= NAME_MAX_CHARS);
        assert_inert(&shown);
    }

    #[test]
    fn json_is_made_terminal_safe_and_stays_exact() {
        let names =
            ["plain", "\x1b]0;t\x07", "a\u{7f}\u{9b}b", "evil\u{202e}x\u{200b}", "tag\u{e0041}", "q\"\\\n", "模块🚀"];
        let text = json(serde_json::to_string_pretty(&names).unwrap_or_default());
        assert!(!text.chars().any(|c| c != '\n' && is_unsafe(c)), "{text}");
        assert!(text.contains(r"\u202e") && text.contains(r"\udb40\udc41") && text.contains("模块🚀"), "{text}");
        let back: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, names);
        let plain = serde_json::to_string(&["a", "b"]).unwrap_or_default();
        assert_eq!(json(plain.clone()), plain);
    }
}
