//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034, RFC 3463).

use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463), e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One reply: a three-digit code and one or more lines of text.
///
/// RFC 2034 puts the enhanced code on every line of every reply except the greeting and
/// the answer to HELO/EHLO/LHLO; [`Reply::new`] and [`Reply::plain`] keep to that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    /// Never empty; without CR or LF (the constructors replace control characters).
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl AsRef<str>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![printable(text.as_ref())],
        }
    }

    /// A reply without an enhanced code: the greeting, 354, and the HELO/EHLO answer.
    pub fn plain(code: u16, lines: &[&str]) -> Reply {
        let mut lines: Vec<String> = lines.iter().map(|l| printable(l)).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// The text lines, without code or CRLF.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx: the command failed for good (RFC 5321 4.2.1).
    pub fn is_permanent_failure(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Appends the wire form: `code-text` for all lines but the last, `code text` for the
    /// last (RFC 5321 4.2.1), each ending in CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            // Writing into a Vec cannot fail.
            let _ = match self.enhanced {
                Some(enhanced) => write!(out, "{}{separator}{enhanced} {line}\r\n", self.code),
                None => write!(out, "{}{separator}{line}\r\n", self.code),
            };
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Text fit for a reply line: a client's address echoed back must not be able to end the
/// line early and forge a second reply, so control characters become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_reply_uses_dash_then_space() {
        let reply = Reply::plain(250, &["mx.example", "PIPELINING", "SIZE 10"]);
        assert_eq!(
            reply.to_string(),
            "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
    }

    #[test]
    fn enhanced_code_on_every_line() {
        let reply = Reply::new(550, Enhanced(5, 1, 1), "no such mailbox");
        assert_eq!(reply.to_string(), "550 5.1.1 no such mailbox\r\n");
    }

    #[test]
    fn control_characters_cannot_forge_a_reply_line() {
        let reply = Reply::new(550, Enhanced(5, 1, 1), "<a\r\n250 2.0.0 ok@x>");
        assert_eq!(reply.to_string(), "550 5.1.1 <a??250 2.0.0 ok@x>\r\n");
    }
}
