//! Provider text made safe for the terminal.
//!
//! Error codes and descriptions (RFC 6749 §4.1.2.1, §5.2), `error_uri`, device-flow
//! verification URIs and user codes (RFC 8628 §3.2) come from the provider or from whoever
//! reached the loopback port. Printed as they are, an escape sequence in them could rewrite the
//! terminal (clear it, fake a prompt, set the window title); a bidirectional override could
//! make a URL read differently from what it is. So such text loses its control and bidi
//! formatting characters, and is bounded in length.

/// Longest provider text shown, in characters.
pub const MAX_CHARS: usize = 500;

/// `text` without control characters (C0, DEL, C1: line breaks and tabs become spaces) and
/// without bidirectional formatting characters, cut at [`MAX_CHARS`].
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_CHARS));
    for (n, c) in text.chars().enumerate() {
        if n == MAX_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Unicode bidirectional formatting characters (LRM, RLM, ALM, embeddings, overrides,
/// isolates): invisible, and able to reorder what is displayed around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bidi_are_removed_and_length_is_bounded() {
        assert_eq!(printable("a\u{1b}[2Jb\u{7}c\u{9b}d"), "a[2Jbcd");
        assert_eq!(printable("line1\nline2\tx"), "line1 line2 x");
        assert_eq!(printable("evil\u{202E}txt.exe"), "eviltxt.exe");
        assert_eq!(printable("ünïcödé ok"), "ünïcödé ok");
        let long = printable(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_CHARS + 1);
    }
}
