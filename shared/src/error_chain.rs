//! An error and its causes on one line, for the `error: …` line both binaries end with.
//!
//! Error types often show their source in their own message already (`database: {0}`,
//! `{url}: {source}`), so a cause whose text is already on the line is skipped: the line says
//! each thing once (anyhow's `{:#}` would repeat it). Pure: no I/O.

use std::error::Error;

/// `error: source: source`, each cause appended unless its text is already there.
pub fn display(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// A message and an optional cause, like a thiserror variant with a `#[source]`.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn causes_are_appended_in_order() {
        let e = E(
            "reading the CA",
            Some(Box::new(E("tls", Some(Box::new(E("bad pem", None)))))),
        );
        assert_eq!(display(&e), "reading the CA: tls: bad pem");
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = E(
            "database: disk full",
            Some(Box::new(E(
                "disk full",
                Some(Box::new(E("errno 28", None))),
            ))),
        );
        assert_eq!(display(&e), "database: disk full: errno 28");
        assert_eq!(display(&E("alone", None)), "alone");
    }
}
