//! The message text after DATA (RFC 5321 4.1.1.4, 4.5.2): dot-unstuffing, the
//! `CRLF . CRLF` end, and the size bound.
//!
//! Only `CRLF . CRLF` ends the text. A bare LF before or after the dot does not: that is
//! the SMTP-smuggling trick (a second message hidden in the first, read differently by
//! two servers), and a server that ends the text only where RFC 5321 says cannot be
//! fooled by it.

/// Where in a line the reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after CRLF (the DATA command's own CRLF counts, so the text may be empty).
    LineStart,
    /// Inside a line.
    Text,
    /// Inside a line, just after CR.
    Cr,
    /// A dot at the start of a line, not kept: either stuffing or the end.
    Dot,
    /// `CRLF . CR`: the end if LF follows.
    DotCr,
}

/// Takes the text in pieces of any size; keeps at most `max` bytes of it.
#[derive(Debug)]
pub(super) struct DataReader {
    state: State,
    text: Vec<u8>,
    /// Bytes of unstuffed text seen, kept or not.
    size: usize,
    max: usize,
}

/// The text was longer than the bound; what there was of it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLarge;

impl DataReader {
    pub(super) fn new(max: usize) -> DataReader {
        DataReader {
            state: State::LineStart,
            text: Vec::new(),
            size: 0,
            max,
        }
    }

    /// Reads `input` up to and including the end marker. Returns how many bytes it took
    /// and whether the end was reached; bytes after the end belong to the next command.
    pub(super) fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut at = 0;
        while let Some(&byte) = input.get(at) {
            match self.state {
                State::Text => {
                    // Most bytes are plain text: copy up to and including the next CR.
                    let rest = &input[at..];
                    match rest.iter().position(|&b| b == b'\r') {
                        Some(cr) => {
                            self.keep(&rest[..=cr]);
                            at += cr + 1;
                            self.state = State::Cr;
                        }
                        None => {
                            self.keep(rest);
                            at = input.len();
                        }
                    }
                }
                State::Cr => {
                    at += 1;
                    self.keep(&[byte]);
                    self.state = match byte {
                        b'\n' => State::LineStart,
                        b'\r' => State::Cr,
                        _ => State::Text,
                    };
                }
                State::LineStart => {
                    if byte == b'.' {
                        at += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if byte == b'\r' {
                        at += 1;
                        self.state = State::DotCr;
                    } else {
                        // The dot was stuffing (RFC 5321 4.5.2): dropped, the line goes on.
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if byte == b'\n' {
                        return (at + 1, true);
                    }
                    // `.CR` then something else: a stuffed line that starts with CR. The
                    // CR is kept; `byte` is read again as what follows a CR.
                    self.keep(b"\r");
                    self.state = State::Cr;
                }
            }
        }
        (at, false)
    }

    /// The text, without the end marker, or [`TooLarge`].
    pub(super) fn finish(self) -> Result<Vec<u8>, TooLarge> {
        if self.size > self.max {
            Err(TooLarge)
        } else {
            Ok(self.text)
        }
    }

    /// Bytes held in memory: never more than the bound.
    pub(super) fn held(&self) -> usize {
        self.text.len()
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size <= self.max {
            self.text.extend_from_slice(bytes);
        } else if !self.text.is_empty() {
            // Over the bound: read on to the end (the client only hears after the dot,
            // RFC 5321 4.2.5), but hold nothing.
            self.text = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes; the text and the bytes after the end.
    fn read(input: &[u8], piece: usize, max: usize) -> Option<(Result<Vec<u8>, TooLarge>, usize)> {
        let mut reader = DataReader::new(max);
        let mut at = 0;
        while at < input.len() {
            let end = (at + piece).min(input.len());
            let (taken, done) = reader.feed(&input[at..end]);
            at += taken;
            if done {
                return Some((reader.finish(), input.len() - at));
            }
            assert_eq!(at, end, "a reader that is not done takes everything");
        }
        None
    }

    fn text(input: &[u8]) -> Vec<u8> {
        for piece in [1, 2, 3, 7, input.len().max(1)] {
            let (text, _) = read(input, piece, 1 << 20).expect("the end is found");
            let text = text.expect("within the bound");
            assert_eq!(
                text,
                read(input, 1, 1 << 20).unwrap().0.unwrap(),
                "piece {piece}"
            );
        }
        read(input, input.len().max(1), 1 << 20).unwrap().0.unwrap()
    }

    #[test]
    fn text_ends_at_crlf_dot_crlf_and_keeps_the_last_crlf() {
        assert_eq!(
            text(b"Subject: x\r\n\r\nhello\r\n.\r\n"),
            b"Subject: x\r\n\r\nhello\r\n"
        );
    }

    #[test]
    fn empty_text_right_after_data() {
        assert_eq!(text(b".\r\n"), b"");
    }

    #[test]
    fn leading_dots_are_unstuffed() {
        assert_eq!(
            text(b"..\r\n..x\r\n.y\r\n...\r\n.\r\n"),
            b".\r\n.x\r\ny\r\n..\r\n"
        );
        assert_eq!(text(b"..\r\n.\r\n"), b".\r\n");
    }

    #[test]
    fn dot_cr_not_followed_by_lf_is_a_stuffed_line() {
        assert_eq!(text(b".\rx\r\n.\r\n"), b"\rx\r\n");
        assert_eq!(text(b".\r\r\n.\r\n"), b"\r\r\n");
    }

    #[test]
    fn bare_lf_does_not_end_the_text() {
        // SMTP smuggling: `LF . CRLF`, `CRLF . LF`, `CR . CR` are text, not the end.
        let input = b"a\n.\r\nMAIL FROM:<x@y>\r\nb\r\n.\nc\r.\r\n.\r\n";
        assert_eq!(text(input), b"a\n.\r\nMAIL FROM:<x@y>\r\nb\r\n\nc\r.\r\n");
    }

    #[test]
    fn bytes_after_the_end_are_left_for_the_next_command() {
        let (text, left) = read(b"hi\r\n.\r\nQUIT\r\n", 100, 100).unwrap();
        assert_eq!(text.unwrap(), b"hi\r\n");
        assert_eq!(left, 6);
    }

    #[test]
    fn over_the_bound_is_read_to_the_end_and_refused() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let mut reader = DataReader::new(1000);
        let (taken, done) = reader.feed(&input);
        assert!(done);
        assert_eq!(taken, input.len() - 6);
        assert_eq!(reader.held(), 0, "nothing held past the bound");
        assert_eq!(reader.finish(), Err(TooLarge));
    }

    #[test]
    fn exactly_the_bound_is_accepted() {
        let (text, _) = read(b"12345678\r\n.\r\n", 3, 10).unwrap();
        assert_eq!(text.unwrap(), b"12345678\r\n");
        let (text, _) = read(b"123456789\r\n.\r\n", 3, 10).unwrap();
        assert_eq!(text, Err(TooLarge));
    }
}
