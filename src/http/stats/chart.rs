//! The dashboard's chart of answered and missed calls per hour, drawn on the server as
//! SVG: stacked bars, an axis with the hours and the scale, a legend. Pure: counts and
//! words in, markup out.
//!
//! Presentation attributes only (no `style`, no CSS, no script), so the image looks the
//! same wherever it is shown and a strict Content-Security-Policy can serve it. It is
//! accessible as one image: `role="img"`, `aria-label`, a `<title>` and a `<desc>` with
//! the totals; every bar has a `<title>` of its own for pointer users.

use std::fmt::Write as _;

/// The calls of one hour of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourBucket {
    /// 0 to 23.
    pub hour: u8,
    pub answered: u64,
    pub missed: u64,
}

/// The chart's words, in the reader's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartLabels {
    pub title: String,
    pub answered: String,
    pub missed: String,
    /// Shown instead of bars when there were no calls.
    pub empty: String,
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 300;
const LEFT: u32 = 44;
const RIGHT: u32 = 12;
const TOP: u32 = 48;
const BOTTOM: u32 = 28;
const ANSWERED_FILL: &str = "#2e7d32";
const MISSED_FILL: &str = "#c62828";
const AXIS: &str = "#555555";
const TEXT: &str = "#222222";

/// Text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 allows no other control characters.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The chart of `buckets` (any hours, in any order; an hour not given has no calls),
/// scaled so that the busiest hour fills the plot.
pub fn hourly_chart(buckets: &[HourBucket], labels: &ChartLabels) -> String {
    let mut hours = [HourBucket::default(); 24];
    for (hour, slot) in hours.iter_mut().enumerate() {
        slot.hour = hour as u8;
    }
    for bucket in buckets.iter().filter(|b| b.hour < 24) {
        let slot = &mut hours[usize::from(bucket.hour)];
        slot.answered += bucket.answered;
        slot.missed += bucket.missed;
    }
    let max = hours
        .iter()
        .map(|h| h.answered + h.missed)
        .max()
        .unwrap_or(0);
    let (answered, missed) = hours
        .iter()
        .fold((0, 0), |(a, m), h| (a + h.answered, m + h.missed));
    let title = escape(&labels.title);
    let (answered_label, missed_label) = (escape(&labels.answered), escape(&labels.missed));

    let plot_width = f64::from(WIDTH - LEFT - RIGHT);
    let plot_height = f64::from(HEIGHT - TOP - BOTTOM);
    let bottom = f64::from(HEIGHT - BOTTOM);
    let slot = plot_width / 24.0;
    let bar = slot * 0.7;

    let mut svg = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\" \
         aria-labelledby=\"chart-title chart-desc\" font-family=\"sans-serif\">\
         <title id=\"chart-title\">{title}</title>\
         <desc id=\"chart-desc\">{answered_label}: {answered}, {missed_label}: {missed}</desc>\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"15\" font-weight=\"bold\" fill=\"{TEXT}\">{title}</text>"
    );
    // Legend, top right.
    let legend_x = WIDTH - RIGHT - 220;
    for (i, (label, fill)) in [
        (&answered_label, ANSWERED_FILL),
        (&missed_label, MISSED_FILL),
    ]
    .into_iter()
    .enumerate()
    {
        let x = legend_x + 110 * i as u32;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"28\" width=\"12\" height=\"12\" fill=\"{fill}\"/>\
             <text x=\"{}\" y=\"38\" font-size=\"12\" fill=\"{TEXT}\">{label}</text>",
            x + 16
        );
    }
    // Axes and the scale.
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"{AXIS}\"/>\
         <line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"{AXIS}\"/>",
        WIDTH - RIGHT
    );
    let ticks: &[u64] = if max == 0 {
        &[0]
    } else if max >= 2 {
        &[0, max / 2, max]
    } else {
        &[0, max]
    };
    for &tick in ticks {
        let y = bottom - plot_height * tick as f64 / max.max(1) as f64;
        let _ = write!(
            svg,
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{LEFT}\" y2=\"{y:.1}\" stroke=\"{AXIS}\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"{TEXT}\">{tick}</text>",
            LEFT - 4,
            LEFT - 6,
            y + 4.0
        );
    }
    for hour in &hours {
        let center = f64::from(LEFT) + slot * (f64::from(hour.hour) + 0.5);
        let _ = write!(
            svg,
            "<text x=\"{center:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" fill=\"{TEXT}\">{:02}</text>",
            HEIGHT - BOTTOM + 16,
            hour.hour
        );
    }
    if max == 0 {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"14\" text-anchor=\"middle\" fill=\"{AXIS}\">{}</text>",
            f64::from(LEFT) + plot_width / 2.0,
            bottom - plot_height / 2.0,
            escape(&labels.empty)
        );
    } else {
        let scale = plot_height / max as f64;
        for hour in hours.iter().filter(|h| h.answered + h.missed > 0) {
            let x = f64::from(LEFT) + slot * f64::from(hour.hour) + (slot - bar) / 2.0;
            let answered_height = hour.answered as f64 * scale;
            let missed_height = hour.missed as f64 * scale;
            for (count, height, y, fill, label) in [
                (
                    hour.answered,
                    answered_height,
                    bottom - answered_height,
                    ANSWERED_FILL,
                    &answered_label,
                ),
                (
                    hour.missed,
                    missed_height,
                    bottom - answered_height - missed_height,
                    MISSED_FILL,
                    &missed_label,
                ),
            ] {
                if count == 0 {
                    continue;
                }
                let _ = write!(
                    svg,
                    "<rect data-hour=\"{:02}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" \
                     height=\"{height:.1}\" fill=\"{fill}\"><title>{:02}:00 {label}: {count}</title></rect>",
                    hour.hour, hour.hour
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> ChartLabels {
        ChartLabels {
            title: "Calls today".into(),
            answered: "answered".into(),
            missed: "missed".into(),
            empty: "no calls".into(),
        }
    }

    fn heights(svg: &str) -> Vec<(String, f64)> {
        svg.split("<rect data-hour=\"")
            .skip(1)
            .map(|rest| {
                let hour = rest[..2].to_owned();
                let height = rest
                    .split("height=\"")
                    .nth(1)
                    .and_then(|h| h.split('"').next())
                    .and_then(|h| h.parse().ok())
                    .unwrap();
                (hour, height)
            })
            .collect()
    }

    #[test]
    fn the_busiest_hour_fills_the_plot_and_others_scale_to_it() {
        let svg = hourly_chart(
            &[
                HourBucket {
                    hour: 9,
                    answered: 6,
                    missed: 2,
                },
                HourBucket {
                    hour: 14,
                    answered: 4,
                    missed: 0,
                },
            ],
            &labels(),
        );
        let plot = f64::from(HEIGHT - TOP - BOTTOM);
        let bars = heights(&svg);
        assert_eq!(
            bars.len(),
            3,
            "answered and missed at 9, answered at 14: {svg}"
        );
        let at = |hour: &str| -> f64 {
            bars.iter()
                .filter(|(h, _)| h == hour)
                .map(|(_, height)| height)
                .sum()
        };
        assert!((at("09") - plot).abs() < 0.2, "{}", at("09"));
        assert!((at("14") - plot / 2.0).abs() < 0.2, "{}", at("14"));
        assert!(svg.contains("<title>09:00 missed: 2</title>"), "{svg}");
        assert!(svg.contains(">8</text>"), "the scale ends at the maximum");
        assert!(
            svg.contains(">23</text>") && svg.contains(">00</text>"),
            "hour axis"
        );
    }

    #[test]
    fn no_calls_draw_an_empty_chart_that_says_so() {
        let svg = hourly_chart(&[], &labels());
        assert!(heights(&svg).is_empty(), "{svg}");
        assert!(svg.contains(">no calls</text>"), "{svg}");
        assert!(svg.contains(">12</text>"), "the hours are still there");
        let zero = hourly_chart(
            &[HourBucket {
                hour: 3,
                answered: 0,
                missed: 0,
            }],
            &labels(),
        );
        assert_eq!(zero, svg);
    }

    #[test]
    fn words_are_escaped_and_the_image_is_accessible_without_style_or_script() {
        let svg = hourly_chart(
            &[HourBucket {
                hour: 1,
                answered: 1,
                missed: 1,
            }],
            &ChartLabels {
                title: "Anrufe <heute> & \"morgen\"".into(),
                answered: "<script>alert(1)</script>".into(),
                missed: "ver'passt".into(),
                empty: "keine".into(),
            },
        );
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("aria-label=\"Anrufe &lt;heute&gt; &amp; &quot;morgen&quot;\""));
        assert!(svg.contains("<title id=\"chart-title\">Anrufe &lt;heute&gt;"));
        assert!(svg.contains("ver&#39;passt"));
        assert!(svg.contains("role=\"img\""));
        assert!(!svg.contains("style"), "presentation attributes only");
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
    }
}
