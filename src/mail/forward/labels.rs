//! The words mail clients write when they forward: header labels of a forwarded block in
//! the languages of their user interfaces, and the subject prefixes of forwards and replies.
//!
//! The lists hold the labels that Gmail, Outlook (2013, 2019, new, web), Apple Mail,
//! Thunderbird, Yahoo, HubSpot, IONOS, MailMate and Missive write (seen in the corpus of
//! `tests/data/email/forwarded-inline`), plus the same words of other common locales.
//! Matching is case-insensitive; a label counts only when a colon follows it.

/// Which header of the forwarded message a label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    From,
    To,
    Cc,
    Date,
    Subject,
    /// Recognised so that a block does not end at it (Reply-To, Bcc), otherwise unused.
    Other,
}

#[rustfmt::skip]
const FROM: &[&str] = &[
    "from", "von", "de", "de la", "da", "van", "fra", "från", "od", "lähettäjä", "feladó", "от",
    "від", "від кого", "kimden", "gönderen", "saatja", "šalje", "expeditorul", "expéditeur",
    "expediteur", "отправитель", "nadawca", "mittente", "remitente", "afzender", "absender",
    "odesílatel", "odosielateľ", "送信元", "差出人", "送信者", "发件人", "發件人", "寄件者", "寄件人", "보낸 사람",
    "보낸사람", "αποστολέας", "από", "pošiljatelj", "pošiljalac", "pošiljalec", "siuntėjas",
    "sūtītājs", "remitent", "avsändare", "avsender", "afsender", "frá", "dari", "người gửi",
    "จาก", "מאת", "من", "sender",
];

#[rustfmt::skip]
const TO: &[&str] = &[
    "to", "an", "à", "a", "para", "aan", "til", "till", "do", "komu", "vastaanottaja",
    "címzett", "кому", "kime", "alıcı", "saaja", "prima", "către", "destinatarul", "destinatar",
    "adresat", "adresát", "destinatario", "destinataire", "pour", "pre", "ontvanger",
    "empfänger", "宛先", "送信先", "收件人", "收件者", "받는 사람", "받는사람", "προς", "prejemnik", "gavėjas",
    "adresāts", "destinatari", "mottagare", "mottaker", "modtager", "kepada", "đến", "ถึง",
    "אל", "إلى", "recipient", "recipients", "primatelj",
];

#[rustfmt::skip]
const CC: &[&str] = &[
    "cc", "kopie", "kopie (cc)", "kopia", "kopi", "kópia", "kopio", "másolat", "másolatot kap",
    "копия", "копія", "bilgi", "koopia", "kopija", "copie", "copie à", "copia", "cópia", "dw",
    "dw.", "抄送", "副本", "참조", "κοιν.", "κοιν", "cc.",
];

#[rustfmt::skip]
const DATE: &[&str] = &[
    "date", "sent", "datum", "dato", "data", "fecha", "envoyé", "envoyé le", "enviado",
    "enviada", "inviato", "verzonden", "gesendet", "sendt", "skickat", "lähetetty", "päiväys",
    "päivämäärä", "dátum", "elküldve", "дата", "отправлено", "надіслано", "відправлено",
    "tarih", "gönderildi", "gönderilen", "gönderme tarihi", "kuupäev", "saadetud", "poslano",
    "poslané", "odesláno", "odoslané", "wysłano", "wysłane", "trimis", "dată", "日付", "送信日時",
    "日時", "日期", "发送时间", "發送時間", "날짜", "보낸 날짜", "ημερομηνία", "sent on", "datum odeslání",
    "data wysłania",
];

#[rustfmt::skip]
const SUBJECT: &[&str] = &[
    "subject", "betreff", "objet", "sujet", "asunto", "assunto", "oggetto", "onderwerp", "emne",
    "ämne", "aihe", "tárgy", "тема", "konu", "teema", "naslov", "predmet", "předmět", "temat",
    "subiect", "subiectul", "件名", "主题", "主旨", "제목", "θέμα", "tema", "dalykas", "temats",
    "assumpte", "tiêu đề", "เรื่อง", "נושא", "الموضوع",
];

#[rustfmt::skip]
const OTHER: &[&str] = &[
    "reply-to", "antwort an", "répondre à", "responder a", "rispondi a", "bcc", "cco", "ccn",
    "bkopie", "skrytá kopie", "ukrytá kopia", "blindkopie",
];

/// Subject prefixes of forwards. `vs` is a forward in Danish and Norwegian Outlook (and a
/// reply in Finnish, which is the smaller risk: such a block still names the customer).
#[rustfmt::skip]
const FORWARD_PREFIXES: &[&str] = &[
    "fw", "fwd", "wg", "tr", "rv", "i", "vs", "vl", "pd", "enc", "videresend", "vb", "ilt",
    "i̇lt", "redir", "redir.", "doorst", "doorgestuurd", "továbbítás",
    "转发", "轉寄", "転送", "전달",
];

/// Subject prefixes of replies.
#[rustfmt::skip]
const REPLY_PREFIXES: &[&str] = &[
    "re", "aw", "sv", "antw", "antwort", "r", "rif", "res", "odp", "vá", "válasz", "ynt", "atb",
    "ats", "odg", "отв", "ответ", "відп", "回复", "回覆", "答复", "返信", "답장", "απ",
];

/// What a subject line says the message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubjectKind {
    Forward,
    Reply,
    Other,
}

/// The kind of the first prefix (`Fwd:`, `AW:`, `Re[2]:`) after any `[tag]`s.
pub(super) fn subject_kind(subject: &str) -> SubjectKind {
    let mut text = subject.trim_start();
    // Gateways tag subjects: "[EXTERNAL] FW: …".
    while let Some(rest) = text.strip_prefix('[') {
        match rest.find(']') {
            Some(end) => text = rest[end + 1..].trim_start(),
            None => break,
        }
    }
    let Some(colon) = text.find([':', '：']) else {
        return SubjectKind::Other;
    };
    let prefix = text[..colon].trim();
    if prefix.chars().count() > 16 {
        return SubjectKind::Other;
    }
    // Counters some clients add: "Re[2]", "Fwd(3)", "RE 2".
    let word = prefix
        .trim_end_matches(|c: char| c.is_ascii_digit() || "[]() ".contains(c))
        .to_lowercase();
    if FORWARD_PREFIXES.contains(&word.as_str()) {
        SubjectKind::Forward
    } else if REPLY_PREFIXES.contains(&word.as_str()) {
        SubjectKind::Reply
    } else {
        SubjectKind::Other
    }
}

/// A label at the start of `text`, followed by its colon: the field and the text after the
/// colon. Tries the longest label first, so `Datum:` is not read as `Da` + `tum:`.
pub(super) fn label_prefix(text: &str) -> Option<(Field, &str)> {
    let first = text.chars().next()?.to_lowercase().next()?;
    let mut best: Option<(usize, Field, &str)> = None;
    for (field, labels) in [
        (Field::From, FROM),
        (Field::To, TO),
        (Field::Cc, CC),
        (Field::Date, DATE),
        (Field::Subject, SUBJECT),
        (Field::Other, OTHER),
    ] {
        for label in labels.iter() {
            if !label.starts_with(first) || best.is_some_and(|(len, ..)| len >= label.len()) {
                continue;
            }
            if let Some(rest) = strip_prefix_ci(text, label) {
                let rest = rest.trim_start_matches([' ', '\t', '\u{a0}', '*']);
                if let Some(value) = rest.strip_prefix(':').or_else(|| rest.strip_prefix('：')) {
                    best = Some((label.len(), field, value.trim_start_matches('*')));
                }
            }
        }
    }
    best.map(|(_, field, value)| (field, value))
}

/// `text` without `prefix`, compared case-insensitively character by character.
fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let mut chars = text.char_indices();
    for expected in prefix.chars() {
        let (_, found) = chars.next()?;
        if found != expected && !found.to_lowercase().eq(expected.to_lowercase()) {
            return None;
        }
    }
    Some(chars.next().map_or("", |(at, _)| &text[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e16_forward_and_reply_subjects() {
        for subject in [
            "Fwd: x",
            "FW: x",
            "WG: x",
            "TR: x",
            "RV: x",
            "I: x",
            "VS: x",
            "Vs: x",
            "VL: x",
            "PD: x",
            "ENC: x",
            "Videresend: x",
            "VB: x",
            "İLT: x",
            "Redir.: x",
            "[EXTERNAL] FW: x",
            "Fwd[2]: x",
            "転送：x",
        ] {
            assert_eq!(subject_kind(subject), SubjectKind::Forward, "{subject}");
        }
        for subject in [
            "Re: x", "AW: x", "SV: x", "Antw: x", "RE[3]: x", "R: x", "Odp: x",
        ] {
            assert_eq!(subject_kind(subject), SubjectKind::Reply, "{subject}");
        }
        for subject in [
            "Angebot",
            "Termin: Montag",
            "",
            ":",
            "Integer consequat: non",
        ] {
            assert_eq!(subject_kind(subject), SubjectKind::Other, "{subject}");
        }
    }

    #[test]
    fn labels_need_their_colon_and_prefer_the_longest() {
        assert_eq!(label_prefix("Von: a").map(|(f, _)| f), Some(Field::From));
        assert_eq!(label_prefix("De la: a").map(|(f, _)| f), Some(Field::From));
        assert_eq!(label_prefix("Datum: 1").map(|(f, _)| f), Some(Field::Date));
        assert_eq!(label_prefix("Da: x").map(|(f, _)| f), Some(Field::From));
        assert_eq!(label_prefix("De : x"), Some((Field::From, " x")));
        assert_eq!(label_prefix("送信元：x").map(|(f, _)| f), Some(Field::From));
        assert_eq!(label_prefix("ОТ: x").map(|(f, _)| f), Some(Field::From));
        assert_eq!(label_prefix("From* x"), None);
        assert_eq!(label_prefix("Fromage: x"), None);
        assert_eq!(
            label_prefix("Vastaanottaja: x").map(|(f, _)| f),
            Some(Field::To)
        );
        assert_eq!(label_prefix(""), None);
    }
}
