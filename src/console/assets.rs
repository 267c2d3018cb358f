//! The embedded files of the console and how they are served: the page shell with its
//! language and catalogue, static assets with validators, and the security headers
//! (a Content-Security-Policy that allows no inline script and no other origin).

use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{catalogue, lang};

#[derive(rust_embed::RustEmbed)]
#[folder = "console/"]
pub(super) struct Assets;

/// Scripts and styles only from this origin, no inline script or style, no plugins, no
/// framing; the call window's EventSource and the API are same-origin too.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; \
font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `GET /`: the shell, in the request's language, with that language's catalogue
/// embedded as a JSON data block (not a script: the policy above would refuse that).
pub async fn shell(headers: HeaderMap) -> Response {
    let lang = lang::request_lang(&headers);
    let Some(template) = Assets::get("index.html") else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the console is missing from this build",
        )
            .into_response();
    };
    let catalogue = catalogue::raw(lang).unwrap_or_else(|| "{}".to_owned());
    let page = render_shell(
        &String::from_utf8_lossy(&template.data),
        lang,
        &catalogue::text(lang, "app.name"),
        &catalogue,
    )
    .replace("{{skip}}", &escape_html(&catalogue::text(lang, "app.skip")));
    let mut response = (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            // The shell names the language: a cache must not hand it to another person.
            (CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response();
    secure(response.headers_mut());
    response
}

/// Fills the shell's placeholders. The catalogue goes inside `<script type=
/// "application/json">`, where only `</` could end the element early: JSON allows writing
/// every `<` as `\u003c`.
pub fn render_shell(template: &str, lang: &str, title: &str, catalogue: &str) -> String {
    template
        .replace("{{lang}}", lang)
        .replace("{{title}}", &escape_html(title))
        .replace("{{catalogue}}", &catalogue.replace('<', "\\u003c"))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /console/{path}`: a script, stylesheet or image of the console. Revalidated on
/// every load (`no-cache` with an ETag), so an upgraded gateway is never mixed with old
/// scripts in a browser, at the cost of one small 304 per file.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(file) = Assets::get(&path).filter(|_| path != "index.html") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, value);
    }
    secure(h);
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn secure(h: &mut HeaderMap) {
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_cannot_be_broken_out_of_by_the_catalogue() {
        let page = render_shell(
            "<html lang=\"{{lang}}\"><title>{{title}}</title><script type=\"application/json\">{{catalogue}}</script>",
            "de",
            "A<B",
            r#"{"x":"</script><script>alert(1)</script>"}"#,
        );
        assert!(page.contains("lang=\"de\""));
        assert!(page.contains("<title>A&lt;B</title>"));
        assert_eq!(page.matches("</script>").count(), 1, "{page}");
    }

    #[test]
    fn the_policy_allows_no_inline_script() {
        let script_src = CONTENT_SECURITY_POLICY_VALUE
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .expect("script-src");
        assert!(!script_src.contains("unsafe"), "{script_src}");
    }

    /// Vendoring a framework would blow the console's budget: scripts and styles together
    /// stay under 200 KB, uncompressed.
    #[test]
    fn shipped_scripts_and_styles_stay_under_200_kb() {
        let total: usize = Assets::iter()
            .filter(|p| p.ends_with(".js") || p.ends_with(".css"))
            .map(|p| Assets::get(&p).map_or(0, |f| f.data.len()))
            .sum();
        assert!(total < 200 * 1024, "JS+CSS is {total} bytes");
    }
}
