//! Text from outside made fit to show: a registry's tag and repository names, its error
//! texts, anything a hostile registry can make as long and as strange as it likes.
//!
//! Such text reaches report lines, logs, `/healthz` and a GitHub step summary, each read one
//! line at a time. So every quoted name or text is [`clip`]ped (a 2 MiB "tag" must not make
//! every `/healthz` answer megabytes) and escaped: a control character (an ANSI `ESC`
//! that repaints the terminal, a `CR` that overwrites the line, a `LF` that forges the next
//! line of a report) or a bidirectional override is shown as an escape, never sent as is.
//! [`line`] does both, so its limit counts what is shown, escapes included.

use std::fmt::Write as _;

/// The most characters of a name (a tag, a repository) quoted in a message. A valid tag has at
/// most 128 characters, a repository path a few more.
pub const NAME: usize = 200;

/// The most characters of a registry's text (an error message) in a message.
pub const TEXT: usize = 300;

/// `text` cut to `max` characters, ending with `…` and how many were cut when it is longer.
pub fn clip(text: &str, max: usize) -> String {
    shown(text, max, |c, out| out.push(c))
}

/// `text` as one line of at most `max` characters shown: every control character (`ESC`,
/// `CR`, `LF`, `DEL`…) and bidirectional formatting character written as an escape (`\n`,
/// `\r`, `\t`, `\u{1b}`), then clipped with a note of how many of its characters were cut.
/// What a report line, a log field or `/healthz` shows of text from outside.
pub fn line(text: &str, max: usize) -> String {
    shown(text, max, escape_char)
}

/// `text` written through `put` character by character until `max` characters are shown;
/// an escape is never cut apart, and the characters of `text` left are counted.
fn shown(text: &str, max: usize, put: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(text.len().min(max.saturating_mul(4)));
    let mut count = 0;
    let mut one = String::new();
    for (i, c) in text.char_indices() {
        one.clear();
        put(c, &mut one);
        let width = one.chars().count();
        if count + width > max {
            let cut = text[i..].chars().count();
            let _ = write!(out, "… ({cut} more characters)");
            return out;
        }
        out.push_str(&one);
        count += width;
    }
    out
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() || is_bidi(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Characters that reorder how the text around them is shown (the "Trojan Source" ones).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_as_it_is() {
        assert_eq!(clip("v1.2.3", 10), "v1.2.3");
        assert_eq!(clip("0123456789", 10), "0123456789");
        assert_eq!(line("v1.2.3", 10), "v1.2.3");
        assert_eq!(line("", 10), "");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis_and_how_much_was_cut() {
        assert_eq!(clip("0123456789ab", 10), "0123456789… (2 more characters)");
        // Characters, not bytes: a cut never falls inside one.
        assert_eq!(clip("ééééé", 2), "éé… (3 more characters)");
        let huge = "a".repeat(2 << 20);
        let shown = line(&huge, NAME);
        assert!(shown.starts_with(&"a".repeat(NAME)), "{shown}");
        assert!(
            shown.ends_with(&format!("… ({} more characters)", (2 << 20) - NAME)),
            "{shown}"
        );
        assert!(shown.len() < NAME + 40, "{}", shown.len());
    }

    #[test]
    fn control_characters_are_escaped_never_sent() {
        let hostile = "denied\r\x1b[2K\x1b[32mOK\x1b[0m\nFAILED forged\u{7f}\u{202e}txt.exe\0";
        let shown = line(hostile, usize::MAX);
        assert_eq!(
            shown,
            "denied\\r\\u{1b}[2K\\u{1b}[32mOK\\u{1b}[0m\\nFAILED forged\\u{7f}\\u{202e}txt.exe\\u{0}"
        );
        assert!(!shown.chars().any(|c| c.is_control() || is_bidi(c)));
        // Printable text of any script is kept.
        assert_eq!(line("tag 标签 é \\ \"x\"", 20), "tag 标签 é \\ \"x\"");
    }

    #[test]
    fn a_line_is_escaped_then_clipped_counting_what_is_shown() {
        assert_eq!(line("a\nb", 10), "a\\nb");
        // Escapes count against the limit, and a cut never splits one.
        let shown = line(&"\x1b".repeat(5), 16);
        assert_eq!(shown, "\\u{1b}\\u{1b}… (3 more characters)");
        // A long text's count covers the part never escaped.
        let long = format!("{}{}", "\r".repeat(20), "x".repeat(1000));
        let shown = line(&long, 10);
        assert!(shown.starts_with("\\r\\r\\r\\r\\r… ("), "{shown}");
        assert!(!shown.contains('\r'));
        assert!(shown.ends_with("… (1015 more characters)"), "{shown}");
    }
}
