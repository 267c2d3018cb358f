//! The pieces of the RFC 3261 §25 grammar our checks need: character classes, SIP and
//! absolute URIs, name-addr / addr-spec with parameters, and `Via` values.
//!
//! Everything works on bytes of one unfolded header value (or the Request-URI) and answers
//! `Err(why)` with a short phrase for the reason phrase of a 400. Nothing here allocates on
//! the success path beyond the parameter list, and nothing indexes without a bound check:
//! the input is whatever a peer sent.

mod fields;
mod uri;

#[cfg(test)]
mod tests;

pub(super) use fields::{NameAddr, contact_list, single_name_addr, via_list};
pub(super) use uri::{Host, SipUri, Uri, uri};

/// Why a value does not follow the grammar, in words for a reason phrase.
pub(super) type Why = String;

// ---------------------------------------------------------------------------------------
// Character classes (RFC 3261 §25.1)
// ---------------------------------------------------------------------------------------

fn is_mark(b: u8) -> bool {
    matches!(
        b,
        b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
    )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || is_mark(b)
}

/// `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")`
pub(super) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// `word` adds `( ) < > : \ " / [ ] ? { }` to the token characters (Call-ID).
fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

pub(super) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

fn is_word(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_word_char(b))
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_header_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// `uric = reserved / unreserved / escaped` (the `%` is checked as an escape separately).
fn is_uric(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
        )
}

/// Every byte is in `class` or starts a `%` HEX HEX escape.
fn escaped_run(s: &[u8], class: fn(u8) -> bool) -> Result<(), Why> {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3).unwrap_or(&[]);
            if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err("'%' not followed by two hex digits".into());
            }
            i += 3;
        } else if class(b) {
            i += 1;
        } else {
            return Err(format!("character {} not allowed", shown(b)));
        }
    }
    Ok(())
}

/// A byte as it should appear in a reason phrase: printable ASCII quoted, else as hex.
pub(super) fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02X}")
    }
}

/// ASCII-only text for a reason phrase (our own grammar only lets ASCII reach it).
pub(super) fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

// ---------------------------------------------------------------------------------------
// Cursor
// ---------------------------------------------------------------------------------------

/// A position in one header value. Every read is bound-checked.
pub(super) struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(s: &'a [u8]) -> Self {
        Self { s, i: 0 }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn bump(&mut self) {
        self.i = (self.i + 1).min(self.s.len());
    }

    pub(super) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Skips SP/HT (folding is already undone); true if any was skipped.
    pub(super) fn skip_ws(&mut self) -> bool {
        let start = self.i;
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
        self.i > start
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        self.s.get(start..self.i).unwrap_or(&[])
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let t = self.take_while(is_token_char);
        (!t.is_empty()).then_some(t)
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), Why> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(match self.peek() {
                Some(found) => format!("expected {what}, found {}", shown(found)),
                None => format!("expected {what}, found the end"),
            })
        }
    }

    /// `quoted-string`, returned with its quotes. Any octet may sit between the quotes;
    /// a backslash quotes the next one (`quoted-pair`).
    fn quoted_string(&mut self) -> Result<&'a [u8], Why> {
        let start = self.i;
        self.expect(b'"', "'\"'")?;
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.bump();
                    break;
                }
                Some(b'\\') => {
                    self.bump();
                    if self.at_end() {
                        return Err("unterminated quoted string".into());
                    }
                    self.bump();
                }
                Some(_) => self.bump(),
            }
        }
        Ok(self.s.get(start..self.i).unwrap_or(&[]))
    }

    /// `comment` with nesting and quoted-pairs. RFC 2543 allowed one after a Via or
    /// Contact value; RFC 3261 dropped it, old stacks still send it. Nesting is bounded
    /// by the input length, and this is a loop, not recursion.
    fn comment(&mut self) -> Result<(), Why> {
        self.expect(b'(', "'('")?;
        let mut depth = 1usize;
        while depth > 0 {
            match self.peek() {
                None => return Err("unterminated comment".into()),
                Some(b'(') => depth += 1,
                Some(b')') => depth -= 1,
                Some(b'\\') => self.bump(),
                Some(_) => {}
            }
            self.bump();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------

/// `1*DIGIT` read as a number, or None when it is not digits or exceeds `max`.
/// Leading zeros are fine (RFC 4475 §3.1.1.1: `0068` is 68).
pub(super) fn bounded_number(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = s
        .iter()
        .position(|&b| b != b'0')
        .map_or(&[][..], |i| &s[i..]);
    if significant.len() > 19 {
        return None;
    }
    let n = significant
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    (n <= max).then_some(n)
}

pub(super) fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `Call-ID = word [ "@" word ]`.
pub(super) fn call_id(value: &[u8]) -> Result<(), Why> {
    let (left, right) = match value.iter().position(|&b| b == b'@') {
        Some(at) => (value.get(..at).unwrap_or(&[]), value.get(at + 1..)),
        None => (value, None),
    };
    if !is_word(left) || right.is_some_and(|r| !is_word(r)) {
        return Err(
            match value.iter().find(|&&b| !is_word_char(b) && b != b'@') {
                Some(&b) => format!("character {} not allowed", shown(b)),
                None => "empty word".into(),
            },
        );
    }
    Ok(())
}

/// `CSeq = 1*DIGIT LWS Method`: the number (at most 2**32-1) and the method.
pub(super) fn cseq(value: &[u8]) -> Result<(u32, &[u8]), Why> {
    let mut c = Cursor::new(value);
    c.skip_ws();
    let digits = c.take_while(|b| b.is_ascii_digit());
    if digits.is_empty() {
        return Err("no sequence number".into());
    }
    let n = bounded_number(digits, u64::from(u32::MAX))
        .ok_or_else(|| format!("sequence number {} exceeds 2**32-1", text(digits)))?;
    if !c.skip_ws() {
        return Err("no space between number and method".into());
    }
    let method = c.token().ok_or_else(|| "no method".to_string())?;
    c.skip_ws();
    if let Some(b) = c.peek() {
        return Err(format!("unexpected {}", shown(b)));
    }
    Ok((u32::try_from(n).unwrap_or(u32::MAX), method))
}

/// `Expires = delta-seconds`, or the RFC 2543 `SIP-date` (`Thu, 01 Dec 2040 16:00:00
/// GMT`) that old stacks still send. Overlarge delta-seconds are left to the registrar,
/// which may treat them as its default (RFC 4475 §3.1.2.4).
pub(super) fn expires(value: &[u8]) -> Result<(), Why> {
    if is_digits(value) || sip_date(value) {
        Ok(())
    } else {
        Err("neither delta-seconds nor an RFC 1123 date in GMT".into())
    }
}

/// `rfc1123-date = wkday "," SP date1 SP time SP "GMT"`.
fn sip_date(v: &[u8]) -> bool {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    // "Thu, 01 Dec 2040 16:00:00 GMT" is exactly 29 octets.
    let Ok(v) = <&[u8; 29]>::try_from(v) else {
        return false;
    };
    let num = |s: &[u8], max: u64| bounded_number(s, max);
    DAYS.contains(&&v[0..3])
        && &v[3..5] == b", "
        && num(&v[5..7], 31).is_some_and(|d| d >= 1)
        && v[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && v[11] == b' '
        && num(&v[12..16], 9999).is_some()
        && v[16] == b' '
        && num(&v[17..19], 23).is_some()
        && v[19] == b':'
        && num(&v[20..22], 59).is_some()
        && v[22] == b':'
        && num(&v[23..25], 60).is_some()
        && &v[25..] == b" GMT"
}
