//! The console's strings: one catalogue file per language (`console/i18n/<lang>.json`, a
//! flat object of key → text with `{placeholders}`), read by the pages and, for what the
//! server draws itself, by [`text`].

use std::collections::HashMap;
use std::sync::OnceLock;

use super::assets::Assets;

/// The console's languages; the first is the fallback.
pub const LANGUAGES: [&str; 2] = ["en", "de"];

type Catalogue = HashMap<String, String>;

fn catalogues() -> &'static HashMap<&'static str, Catalogue> {
    static CATALOGUES: OnceLock<HashMap<&'static str, Catalogue>> = OnceLock::new();
    CATALOGUES.get_or_init(|| {
        LANGUAGES
            .iter()
            .map(|lang| (*lang, parse(raw(lang).as_deref().unwrap_or("{}"))))
            .collect()
    })
}

/// The catalogue file of `lang` as shipped, for the page shell.
pub fn raw(lang: &str) -> Option<String> {
    let file = Assets::get(&format!("i18n/{lang}.json"))?;
    String::from_utf8(file.data.into_owned()).ok()
}

fn parse(json: &str) -> Catalogue {
    serde_json::from_str(json).unwrap_or_else(|err| {
        tracing::error!(%err, "the console's string catalogue is not a flat JSON object");
        Catalogue::new()
    })
}

/// The text of `key` in `lang`; English when the language lacks it, the key itself when
/// no catalogue has it (visible, so a missing string is noticed rather than blank).
pub fn text(lang: &str, key: &str) -> String {
    let all = catalogues();
    all.get(lang)
        .and_then(|c| c.get(key))
        .or_else(|| all.get(LANGUAGES[0]).and_then(|c| c.get(key)))
        .cloned()
        .unwrap_or_else(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn keys(lang: &str) -> BTreeSet<String> {
        catalogues()[lang].keys().cloned().collect()
    }

    fn placeholders(text: &str) -> BTreeSet<String> {
        text.split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
            .collect()
    }

    #[test]
    fn every_language_has_every_string() {
        let english = keys("en");
        assert!(english.len() > 50, "the English catalogue looks empty");
        for lang in LANGUAGES {
            let these = keys(lang);
            let missing: Vec<_> = english.difference(&these).collect();
            let extra: Vec<_> = these.difference(&english).collect();
            assert!(missing.is_empty(), "{lang} lacks {missing:?}");
            assert!(extra.is_empty(), "{lang} has keys English lacks: {extra:?}");
        }
    }

    #[test]
    fn translations_keep_the_placeholders() {
        for (key, english) in &catalogues()["en"] {
            for lang in LANGUAGES {
                let other = &catalogues()[lang][key];
                assert_eq!(placeholders(english), placeholders(other), "{lang} {key}");
            }
        }
    }

    /// Every `t('key')` in the scripts names a string of the catalogue, so no page shows a
    /// bare key.
    #[test]
    fn every_key_the_scripts_use_exists() {
        let english = keys("en");
        let mut unknown = Vec::new();
        for path in Assets::iter().filter(|p| p.ends_with(".js")) {
            let file = Assets::get(&path).expect("listed asset");
            let source = String::from_utf8_lossy(&file.data);
            for key in used_keys(&source) {
                if !english.contains(&key) {
                    unknown.push(format!("{path}: {key}"));
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "keys not in the catalogue: {unknown:#?}"
        );
    }

    /// Literal keys of `t("…")` / `t('…')` calls.
    fn used_keys(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        let bytes = source.as_bytes();
        let mut at = 0;
        while let Some(pos) = source[at..].find("t(") {
            let start = at + pos;
            at = start + 2;
            let before = start.checked_sub(1).map(|i| bytes[i]);
            if before
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$')
            {
                continue;
            }
            let Some(&quote) = bytes.get(at) else { break };
            if quote != b'\'' && quote != b'"' {
                continue;
            }
            if let Some(len) = source[at + 1..].find(quote as char) {
                let key = &source[at + 1..at + 1 + len];
                // `t('role.' + role)` builds its key: only whole literals are checked.
                let whole = matches!(
                    source[at + 2 + len..].trim_start().chars().next(),
                    Some(')' | ',')
                );
                if whole
                    && !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    found.push(key.to_owned());
                }
            }
        }
        found
    }

    #[test]
    fn used_keys_finds_only_calls_of_t() {
        let src =
            "t('a.b'); x.t('no'); list('no'); t(\"c_d\", {n: 1}); t(variable); t('role.' + r)";
        assert_eq!(used_keys(src), ["a.b", "c_d"]);
    }

    #[test]
    fn text_falls_back_to_english_then_to_the_key() {
        assert_eq!(text("de", "no.such.key"), "no.such.key");
        assert_eq!(text("xx", "app.name"), text("en", "app.name"));
    }
}
