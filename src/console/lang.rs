//! Which language a page is shown in: the person's choice (the `leadline_lang` cookie the
//! console sets), else the browser's `Accept-Language` (RFC 9110 12.5.4), else English.

use axum::http::HeaderMap;
use axum::http::header::{ACCEPT_LANGUAGE, COOKIE};

use super::catalogue::LANGUAGES;

/// The cookie the console's language selector writes.
pub const LANG_COOKIE: &str = "leadline_lang";

/// The language of the request's pages: one of [`LANGUAGES`].
pub fn request_lang(headers: &HeaderMap) -> &'static str {
    let cookies = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    for header in cookies {
        if let Some(chosen) = cookie_value(header, LANG_COOKIE).and_then(supported) {
            return chosen;
        }
    }
    headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(negotiate)
        .unwrap_or(LANGUAGES[0])
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.trim_matches('"'))
    })
}

fn supported(tag: &str) -> Option<&'static str> {
    let primary = tag.split(['-', '_']).next()?.trim();
    LANGUAGES
        .iter()
        .find(|lang| lang.eq_ignore_ascii_case(primary))
        .copied()
}

/// The supported language the header weighs highest; ties keep the header's order.
fn negotiate(header: &str) -> Option<&'static str> {
    let mut best: Option<(&'static str, u16)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let quality = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map(parse_quality)
            .unwrap_or(1000);
        if quality == 0 {
            continue;
        }
        let Some(lang) = supported(tag) else { continue };
        if best.is_none_or(|(_, q)| quality > q) {
            best = Some((lang, quality));
        }
    }
    best.map(|(lang, _)| lang)
}

/// A qvalue in thousandths; malformed values count as 0 (not acceptable).
fn parse_quality(q: &str) -> u16 {
    q.trim()
        .parse::<f32>()
        .ok()
        .filter(|q| (0.0..=1.0).contains(q))
        .map(|q| (q * 1000.0).round() as u16)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn english_without_any_hint() {
        assert_eq!(request_lang(&HeaderMap::new()), "en");
    }

    #[test]
    fn accept_language_picks_german_from_a_german_browser() {
        assert_eq!(
            request_lang(&headers(&[("accept-language", "de-DE,de;q=0.9,en;q=0.8")])),
            "de"
        );
        assert_eq!(
            request_lang(&headers(&[("accept-language", "de-AT")])),
            "de"
        );
    }

    #[test]
    fn accept_language_weighs_qualities_not_order() {
        assert_eq!(
            request_lang(&headers(&[("accept-language", "en;q=0.5, de;q=0.9")])),
            "de"
        );
        assert_eq!(
            request_lang(&headers(&[("accept-language", "fr, de;q=0.2, en;q=0.3")])),
            "en"
        );
    }

    #[test]
    fn accept_language_skips_refused_and_unknown_languages() {
        assert_eq!(
            request_lang(&headers(&[("accept-language", "de;q=0, fr")])),
            "en"
        );
        assert_eq!(
            request_lang(&headers(&[("accept-language", "de;q=abc")])),
            "en"
        );
    }

    #[test]
    fn the_persons_choice_wins_over_the_browser() {
        let h = headers(&[
            ("accept-language", "de-DE"),
            ("cookie", "leadline_session=abc; leadline_lang=en"),
        ]);
        assert_eq!(request_lang(&h), "en");
    }

    #[test]
    fn an_unsupported_cookie_falls_back_to_the_browser() {
        let h = headers(&[("accept-language", "de"), ("cookie", "leadline_lang=xx")]);
        assert_eq!(request_lang(&h), "de");
    }
}
