//! What a REFER asks for (RFC 3515, RFC 3891): a blind transfer to an employee, or a
//! consultation transfer whose `Replaces` names a dialog of another call. Pure parsing;
//! the driver hands the machine the result.

use rsipstack::sip::Uri;

/// What a `Refer-To` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferTarget {
    /// Blind transfer to the user part of the URI (an extension or a number).
    Blind {
        user: String,
    },
    /// A consultation (attended) transfer: the URI carries `Replaces` (RFC 3891) naming
    /// the transferring phone's other call, whose far end takes this call's place.
    Attended {
        replaces: Replaces,
    },
    Unreadable,
}

/// A `Replaces` value (RFC 3891 §6.1): the dialog a consultation transfer replaces, as
/// the transferring phone sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
    /// `early-only`: replace the dialog only while it is still ringing.
    pub early_only: bool,
}

impl Replaces {
    /// Reads the decoded header value: `call-id;to-tag=..;from-tag=..[;early-only]`.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';').map(str::trim);
        let call_id = parts.next().filter(|c| !c.is_empty())?.to_owned();
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for part in parts {
            match part.split_once('=') {
                Some((name, tag)) if name.trim().eq_ignore_ascii_case("to-tag") => {
                    to_tag = Some(tag.trim().to_owned());
                }
                Some((name, tag)) if name.trim().eq_ignore_ascii_case("from-tag") => {
                    from_tag = Some(tag.trim().to_owned());
                }
                None if part.eq_ignore_ascii_case("early-only") => early_only = true,
                _ => {}
            }
        }
        Some(Self {
            call_id,
            to_tag: to_tag?,
            from_tag: from_tag?,
            early_only,
        })
    }

    /// Whether it names `dialog`: the same Call-ID and the same two tags, whichever side
    /// each is on (the phone's from-tag is our remote tag when it placed the call).
    pub fn names(&self, call_id: &str, local_tag: &str, remote_tag: &str) -> bool {
        call_id == self.call_id
            && ((local_tag == self.to_tag && remote_tag == self.from_tag)
                || (local_tag == self.from_tag && remote_tag == self.to_tag))
    }
}

/// Reads a `Refer-To` value: `<sip:102@host>`, a bare `sip:102@host;user=phone`, a
/// display name before the angle brackets, or a URI with embedded headers (`?Replaces=`).
pub fn refer_target(refer_to: &str) -> ReferTarget {
    let uri_text = refer_to
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(refer_to.trim(), |(uri, _)| uri.trim());
    let (uri_text, headers) = match uri_text.split_once('?') {
        Some((uri, headers)) => (uri, Some(headers)),
        None => (uri_text, None),
    };
    // URI headers (RFC 3261 §19.1.1) are escaped: `Replaces=abc%40host%3Bto-tag%3D1...`.
    if let Some(value) = headers
        .into_iter()
        .flat_map(|h| h.split('&'))
        .find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("replaces")
                .then_some(value)
        })
    {
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        return match Replaces::parse(&decoded) {
            Some(replaces) => ReferTarget::Attended { replaces },
            None => ReferTarget::Unreadable,
        };
    }
    match Uri::try_from(uri_text) {
        Ok(uri) => match uri.auth.map(|a| a.user).filter(|u| !u.is_empty()) {
            Some(user) => ReferTarget::Blind { user },
            None => ReferTarget::Unreadable,
        },
        Err(_) => ReferTarget::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Refer-To` lines of Asterisk test-suite scenarios (tests/data/sip-traces/
    /// asterisk/SOURCES.md), with SIPp's placeholders filled as SIPp would.
    fn refer_to_of(file: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/sip-traces/asterisk")
            .join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let line = text
            .lines()
            .find(|l| l.trim_start().to_ascii_lowercase().starts_with("refer-to:"))
            .expect("a Refer-To line");
        let value = line.split_once(':').unwrap().1.trim();
        value
            .replace("[transfer_target]", "102")
            .replace("[remote_ip]", "127.0.0.1")
            .replace("[remote_port]", "5060")
            .replace("[$remote_contact]", "sip:bob@127.0.0.1:5061")
            .replace("[$callid_chunk_1]", "abc")
            .replace("[$callid_chunk_2]", "127.0.0.1")
            .replace("[$remote_to_tag]", "t1")
            .replace("[$remote_from_tag]", "f1")
    }

    #[test]
    fn asterisk_blind_transfer_targets_are_read() {
        assert_eq!(
            refer_target(&refer_to_of("uas-blind-transfer.xml")),
            ReferTarget::Blind { user: "102".into() }
        );
        assert_eq!(
            refer_target(&refer_to_of("blind_transfer_caller_refer_only-alice.xml")),
            ReferTarget::Blind {
                user: "charlie".into()
            }
        );
    }

    #[test]
    fn an_attended_transfer_is_recognised_by_replaces() {
        assert_eq!(
            refer_target(&refer_to_of("attended_transfer_nominal-referer.xml")),
            ReferTarget::Attended {
                replaces: Replaces {
                    call_id: "REMOTEabc@127.0.0.1".into(),
                    to_tag: "t1".into(),
                    from_tag: "f1".into(),
                    early_only: false,
                }
            }
        );
    }

    #[test]
    fn replaces_names_a_dialog_from_either_side() {
        let replaces = Replaces::parse("abc@host;to-tag=gw;from-tag=phone").unwrap();
        assert!(replaces.names("abc@host", "gw", "phone"));
        assert!(replaces.names("abc@host", "phone", "gw"));
        assert!(!replaces.names("abc@host", "gw", "other"));
        assert!(
            !Replaces::parse("other@host;to-tag=gw;from-tag=phone")
                .unwrap()
                .names("abc@host", "gw", "phone")
        );
    }

    #[test]
    fn other_forms() {
        assert_eq!(
            refer_target("\"Ben\" <sip:102@gw.example;transport=udp>"),
            ReferTarget::Blind { user: "102".into() }
        );
        assert_eq!(refer_target("<sip:gw.example>"), ReferTarget::Unreadable);
        // Replaces without its tags cannot name a dialog.
        assert_eq!(
            refer_target("<sip:102@gw?Replaces=abc%40host>"),
            ReferTarget::Unreadable
        );
        assert_eq!(
            refer_target(
                "<sip:102@gw?Replaces=abc%40host%3Bfrom-tag%3Da%3Bto-tag%3Db%3Bearly-only>"
            ),
            ReferTarget::Attended {
                replaces: Replaces {
                    call_id: "abc@host".into(),
                    to_tag: "b".into(),
                    from_tag: "a".into(),
                    early_only: true,
                }
            }
        );
        assert_eq!(refer_target("not a uri"), ReferTarget::Unreadable);
    }
}
