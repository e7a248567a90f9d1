//! Words quoted for a shell, for the commands leakspy suggests (`leakspy why PID --type
//! NAME`): a person copies them into a shell, so a name from the target must arrive there as
//! one argument, exactly, and run nothing (`$(...)`, backticks, `;` are all legal in a type
//! name). The quoted word is also shown on a terminal, so it must not carry what [`terminal`]
//! escapes either.
//!
//! [`terminal`]: super::terminal

use super::terminal::is_unsafe;

/// Characters no shell treats specially anywhere in a word: such a word needs no quotes.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ',' | ':' | '/' | '@' | '%' | '+' | '=' | '-')
}

/// `word` as a shell reads it back, exactly, as one argument:
/// - unchanged when it is made of letters, digits and `_.,:/@%+=-` only (`__main__.Order`);
/// - in POSIX single quotes otherwise, with each `'` written `'\''`;
/// - in `$'...'` when it holds characters a terminal must not receive ([`is_unsafe`]:
///   controls, bidirectional and invisible characters), each written as `\xHH` per UTF-8 byte,
///   with `\\` and `\'` for backslash and quote. `$'...'` is read by bash, zsh, ksh, busybox
///   sh and POSIX.1-2024 shells; it is the only quoting that keeps such a word both exact
///   and harmless to show.
///
/// `None` for a word holding a NUL character, which no command line can carry.
pub fn quote(word: &str) -> Option<String> {
    if word.contains('\0') {
        return None;
    }
    if !word.is_empty() && word.chars().all(is_plain) {
        return Some(word.to_string());
    }
    if !word.chars().any(is_unsafe) {
        return Some(format!("'{}'", word.replace('\'', r"'\''")));
    }
    let mut out = String::from("$'");
    for c in word.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            c if is_unsafe(c) => {
                let mut bytes = [0u8; 4];
                for b in c.encode_utf8(&mut bytes).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What bash makes of `quoted` as one argument: printf prints it back.
    fn through_bash(quoted: &str) -> Vec<u8> {
        let script = format!("printf %s {quoted}");
        let out = Command::new("bash").args(["-c", &script]).output().expect("bash");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    #[test]
    fn plain_names_stay_unquoted() {
        assert_eq!(quote("__main__.Order").as_deref(), Some("__main__.Order"));
        assert_eq!(quote("a-b/c:d,e@f%g+h=i").as_deref(), Some("a-b/c:d,e@f%g+h=i"));
        assert_eq!(quote("").as_deref(), Some("''"));
        assert_eq!(quote("make.<locals>.C").as_deref(), Some("'make.<locals>.C'"));
        assert_eq!(quote("it's").as_deref(), Some(r"'it'\''s'"));
        assert_eq!(quote("a\x1bb").as_deref(), Some(r"$'a\x1bb'"));
        assert_eq!(quote("nul\0").as_deref(), None);
    }

    #[test]
    fn hostile_words_round_trip_through_bash_and_run_nothing() {
        let marker = std::env::temp_dir().join(format!("leakspy-quote-{}", std::process::id()));
        let touch = format!("$(touch {})", marker.display());
        let backticks = format!("`touch {}`", marker.display());
        let words = [
            "__main__.Order",
            "",
            "it's",
            "'",
            "''\\'",
            "a\"b\"c",
            touch.as_str(),
            backticks.as_str(),
            "; rm -rf /nonexistent-leakspy-test ;",
            "$HOME ${PATH} $((1+1)) !! ~root *",
            "line\nbreak\r\ttab",
            "\x1b]0;pwned\x07\x1b[2J",
            "\x1b]52;c;ZWNobyBwd25lZA==\x1b\\",
            "evil\u{202e}txt\u{200b}",
            "C1 \u{9b}2J \u{85}",
            "back\\slash \\x41 \\'",
            "x\x1b1f",
            "café 模块 🚀",
            "-n",
        ];
        for word in words {
            let quoted = quote(word).expect("no NUL");
            assert!(!quoted.chars().any(is_unsafe), "{quoted:?} would reach the terminal raw");
            assert_eq!(through_bash(&quoted), word.as_bytes(), "{word:?} quoted as {quoted}");
        }
        assert!(!marker.exists(), "a quoted word ran a command");
    }
}
