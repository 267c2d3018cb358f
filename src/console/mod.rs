//! The web console (placeholder in this branch; the real module replaces it).
pub fn text(_lang: &str, key: &str) -> String {
    key.to_owned()
}
pub fn request_lang(_headers: &axum::http::HeaderMap) -> &'static str {
    "en"
}
