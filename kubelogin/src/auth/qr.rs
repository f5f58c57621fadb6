//! A QR code drawn on the terminal with Unicode half blocks (two modules per character cell,
//! U+2580 upper half, U+2584 lower half, U+2588 full block), for the device code's
//! `verification_uri_complete` (RFC 8628 §3.3.1: "the authorization server MAY ... render it
//! as a QR code").
//!
//! The modules are drawn in black on a bright white background set by SGR colours (ECMA-48
//! `CSI 30;107 m`), whatever the terminal's theme: a dark theme would otherwise show the code
//! inverted, which many phone scanners refuse. The quiet zone (four modules, ISO/IEC 18004
//! §6.3.8) is part of the drawing.

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

/// Longest text drawn: a longer one makes a code too dense to scan off a terminal.
pub const MAX_QR_TEXT: usize = 512;

/// The lines of the drawing, or `None` when `text` is too long to draw usefully.
pub fn half_blocks(text: &str) -> Option<Vec<String>> {
    if text.len() > MAX_QR_TEXT {
        return None;
    }
    let code = QrCode::new(text.as_bytes()).ok()?;
    let drawing = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Dark)
        .light_color(Dense1x2::Light)
        .quiet_zone(true)
        .build();
    Some(
        drawing
            .lines()
            .map(|line| format!("\x1b[30;107m{line}\x1b[0m"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_half_blocks_in_fixed_colours() {
        let lines = half_blocks("https://idp.example/device?user_code=BCDFGHJK").unwrap();
        // A version 3 code is 29 modules plus two quiet zones of 4: 37 wide, 19 lines.
        assert!(lines.len() > 10, "{}", lines.len());
        for l in &lines {
            assert!(
                l.starts_with("\x1b[30;107m") && l.ends_with("\x1b[0m"),
                "{l:?}"
            );
        }
        let body: String = lines.concat();
        assert!(
            body.contains('\u{2580}') && body.contains('\u{2584}') && body.contains('\u{2588}')
        );
        assert_eq!(half_blocks(&"x".repeat(MAX_QR_TEXT + 1)), None);
    }
}
