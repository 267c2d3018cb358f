//! The dashboard's bar chart of answered and missed calls per hour, drawn as SVG.
//!
//! Pure: counts and labels in, markup out. The console shows it as an `<img>` under a CSP
//! of `default-src 'none'; img-src 'self' data:`, so the drawing uses presentation
//! attributes only: no script, no `style` attribute, nothing fetched from elsewhere.

use std::fmt::Write as _;

use crate::crm::stats::{Counts, HourCount};

/// The words drawn on the chart, in the reader's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartLabels {
    pub title: String,
    pub answered: String,
    pub missed: String,
    /// Shown instead of bars when there were no calls.
    pub empty: String,
}

// The console's colours.
const ANSWERED: &str = "#1d6b3a";
const MISSED: &str = "#b3261e";
const AXIS: &str = "#5a6472";
const GRID: &str = "#d9dee5";
const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 712.0;
const TOP: f64 = 44.0;
const BASELINE: f64 = 208.0;
const SLOT: f64 = (RIGHT - LEFT) / 24.0;
const BAR: f64 = 10.0;

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The y-axis: a "nice" step (1, 2 or 5 times a power of ten) so that at most five steps
/// reach the largest count, and the top tick that covers it.
pub fn ticks(max: u64) -> (u64, u64) {
    if max == 0 {
        return (1, 1);
    }
    let mut magnitude = 1u64;
    loop {
        for step in [magnitude, 2 * magnitude, 5 * magnitude] {
            if max.div_ceil(step) <= 5 {
                return (step, max.div_ceil(step) * step);
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

fn fmt(v: f64) -> String {
    // One decimal keeps the markup short; the viewBox makes it sharp at any size.
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// The chart of 24 hourly buckets (hour 0 first): a pair of bars per hour, answered
/// left and missed right, on a y-axis scaled to the largest count.
pub fn hourly_chart(buckets: &[HourCount; 24], labels: &ChartLabels) -> String {
    let total = Counts::total(buckets);
    let max = buckets
        .iter()
        .map(|b| b.answered.max(b.missed))
        .max()
        .unwrap_or(0);
    let (step, top) = ticks(max);
    let scale = (BASELINE - TOP) / top as f64;
    let (title, answered, missed) = (
        escape(&labels.title),
        escape(&labels.answered),
        escape(&labels.missed),
    );
    let summary = format!(
        "{title}: {} {answered}, {} {missed}",
        total.answered, total.missed
    );
    let mut svg = String::with_capacity(8 * 1024);
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{summary}" font-family="{FONT}" font-size="11">"#,
        w = WIDTH,
        h = HEIGHT,
    );
    let _ = write!(svg, "<title>{summary}</title>");
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="600" fill="{AXIS}">{title}</text>"#
    );
    // Legend, top right.
    for (i, (label, colour)) in [(&answered, ANSWERED), (&missed, MISSED)]
        .into_iter()
        .enumerate()
    {
        let x = RIGHT - 220.0 + i as f64 * 110.0;
        let _ = write!(
            svg,
            r#"<rect class="legend" x="{x}" y="8" width="12" height="12" fill="{colour}"/><text x="{tx}" y="18" fill="{AXIS}">{label}</text>"#,
            tx = fmt(x + 17.0),
        );
    }
    // Grid lines and y-axis labels.
    svg.push_str(r#"<g class="y-axis">"#);
    let mut value = 0;
    while value <= top {
        let y = fmt(BASELINE - value as f64 * scale);
        if value > 0 {
            let _ = write!(
                svg,
                r#"<line x1="{LEFT}" y1="{y}" x2="{RIGHT}" y2="{y}" stroke="{GRID}" stroke-width="1"/>"#
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" dy="4" text-anchor="end" fill="{AXIS}">{value}</text>"#,
            x = fmt(LEFT - 6.0),
        );
        value += step;
    }
    svg.push_str("</g>");
    // X-axis labels every third hour, under the middle of the hour's slot.
    svg.push_str(r#"<g class="x-axis">"#);
    for hour in (0..24).step_by(3) {
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" text-anchor="middle" fill="{AXIS}">{hour:02}</text>"#,
            x = fmt(LEFT + (hour as f64 + 0.5) * SLOT),
            y = fmt(BASELINE + 16.0),
        );
    }
    svg.push_str("</g>");
    // The bars: only hours with calls get one, so each rect is a count.
    svg.push_str(r#"<g class="bars">"#);
    for (hour, bucket) in buckets.iter().enumerate() {
        let middle = LEFT + (hour as f64 + 0.5) * SLOT;
        for (series, label, count, colour, x) in [
            (
                "answered",
                &answered,
                bucket.answered,
                ANSWERED,
                middle - BAR - 1.0,
            ),
            ("missed", &missed, bucket.missed, MISSED, middle + 1.0),
        ] {
            if count == 0 {
                continue;
            }
            let height = count as f64 * scale;
            let _ = write!(
                svg,
                r#"<rect class="bar {series}" data-hour="{hour:02}" data-count="{count}" x="{x}" y="{y}" width="{BAR}" height="{h}" fill="{colour}"><title>{hour:02}:00 {label}: {count}</title></rect>"#,
                x = fmt(x),
                y = fmt(BASELINE - height),
                h = fmt(height),
            );
        }
    }
    svg.push_str("</g>");
    // Axes last, over the bars' feet.
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BASELINE}" stroke="{AXIS}" stroke-width="1"/><line class="axis" x1="{LEFT}" y1="{BASELINE}" x2="{RIGHT}" y2="{BASELINE}" stroke="{AXIS}" stroke-width="1"/>"#
    );
    if total.answered + total.missed == 0 {
        let _ = write!(
            svg,
            r#"<text class="empty" x="{x}" y="{y}" text-anchor="middle" font-size="14" fill="{AXIS}">{empty}</text>"#,
            x = fmt((LEFT + RIGHT) / 2.0),
            y = fmt((TOP + BASELINE) / 2.0),
            empty = escape(&labels.empty),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> ChartLabels {
        ChartLabels {
            title: "Calls today by hour".into(),
            answered: "Answered".into(),
            missed: "Missed".into(),
            empty: "No calls yet".into(),
        }
    }

    fn hours(pairs: &[(usize, u64, u64)]) -> [HourCount; 24] {
        let mut out = [Counts::default(); 24];
        for &(h, answered, missed) in pairs {
            out[h] = Counts {
                offered: answered + missed,
                answered,
                missed,
                ..Counts::default()
            };
        }
        out
    }

    /// Checks that tags are balanced and properly nested, that attribute values are
    /// quoted, and that text holds no raw `<` or unknown `&` entity: what an XML parser
    /// would refuse in markup this module writes (no comments, CDATA or DOCTYPE).
    fn assert_well_formed(xml: &str) {
        let mut open: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(start) = rest.find('<') {
            check_text(&rest[..start]);
            let end = rest[start..].find('>').expect("tag is closed") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "closing tag </{name}>");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().expect("tag name");
                let attrs = &body[name.len()..];
                assert_eq!(attrs.matches('"').count() % 2, 0, "quotes in <{body}>");
                check_text(&attrs.replace('"', ""));
                if !self_closing {
                    open.push(name.to_owned());
                }
            }
            rest = &rest[end + 1..];
        }
        check_text(rest);
        assert!(open.is_empty(), "unclosed: {open:?}");
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
                "bare '&' in {text:?}"
            );
        }
    }

    fn bars(svg: &str, series: &str) -> Vec<(String, f64)> {
        svg.split(&format!(r#"<rect class="bar {series}" data-hour=""#))
            .skip(1)
            .map(|rest| {
                let hour = rest[..2].to_owned();
                let height = rest.split(r#"height=""#).nth(1).unwrap();
                let height = height[..height.find('"').unwrap()].parse().unwrap();
                (hour, height)
            })
            .collect()
    }

    #[test]
    fn bars_scale_to_the_largest_count() {
        let svg = hourly_chart(&hours(&[(9, 4, 2), (14, 1, 0)]), &labels());
        assert_well_formed(&svg);
        let answered = bars(&svg, "answered");
        let missed = bars(&svg, "missed");
        assert_eq!(
            answered.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
            ["09", "14"]
        );
        assert_eq!(missed.len(), 1, "only hours with missed calls get a bar");
        // 4 is the top tick, so the 4-call bar fills the plot's height.
        assert_eq!(answered[0].1, BASELINE - TOP);
        assert_eq!(answered[0].1, 4.0 * answered[1].1);
        assert_eq!(missed[0].1, 2.0 * answered[1].1);
        assert!(svg.contains(r#"aria-label="Calls today by hour: 5 Answered, 2 Missed""#));
        assert!(!svg.contains("class=\"empty\""));
    }

    #[test]
    fn the_y_axis_has_a_few_integer_ticks_covering_the_max() {
        assert_eq!(ticks(0), (1, 1));
        assert_eq!(ticks(1), (1, 1));
        assert_eq!(ticks(4), (1, 4));
        assert_eq!(ticks(7), (2, 8));
        assert_eq!(ticks(23), (5, 25));
        assert_eq!(ticks(101), (50, 150));
        for max in 1..2000 {
            let (step, top) = ticks(max);
            assert!(top >= max && top / step <= 5 && top % step == 0, "{max}");
        }
    }

    #[test]
    fn no_calls_draws_the_axes_and_a_centred_message() {
        let svg = hourly_chart(&hours(&[]), &labels());
        assert_well_formed(&svg);
        assert!(!svg.contains("class=\"bar "));
        assert_eq!(svg.matches(r#"<line class="axis""#).count(), 2);
        assert!(svg.contains(r#"x="378" y="126" text-anchor="middle""#));
        assert!(svg.contains(">No calls yet</text>"));
        assert!(svg.contains(r#"aria-label="Calls today by hour: 0 Answered, 0 Missed""#));
    }

    #[test]
    fn labels_are_escaped_and_nothing_needs_a_script_a_style_or_a_fetch() {
        let tricky = ChartLabels {
            title: "Calls <b>& \"friends\"</b>".into(),
            answered: "A'n".into(),
            missed: "</svg><script>alert(1)</script>".into(),
            empty: "x & y".into(),
        };
        for buckets in [hours(&[]), hours(&[(3, 1, 1)])] {
            let svg = hourly_chart(&buckets, &tricky);
            assert_well_formed(&svg);
            assert!(!svg.contains("<script"));
            assert!(!svg.contains("style="));
            assert!(!svg.contains("href"));
            assert!(!svg.contains("url("));
            assert!(svg.contains("Calls &lt;b&gt;&amp; &quot;friends&quot;&lt;/b&gt;"));
            assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
            assert!(svg.contains(r#"role="img""#) && svg.contains("<title>"));
        }
    }

    #[test]
    fn hours_are_labelled_every_three_hours() {
        let svg = hourly_chart(&hours(&[]), &labels());
        for hour in ["00", "03", "06", "09", "12", "15", "18", "21"] {
            assert!(svg.contains(&format!(">{hour}</text>")), "{hour}");
        }
        assert!(!svg.contains(">01</text>"));
    }
}
