//! The timeline picture: ready replicas and request success rate over the run, with each
//! layer's fault / detected / healed marks. Pure: a [`RunReport`] in, SVG text out. Every mark
//! is an element with `data-layer` and `data-kind` attributes (and a `<title>` tooltip), so tests
//! and scripts can find each layer's events in the file.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;

use crate::report::{MarkKind, RunReport, Status};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
// Panels: replicas, success rate, marks.
const REPLICAS_TOP: f64 = 50.0;
const REPLICAS_H: f64 = 120.0;
const SUCCESS_TOP: f64 = 210.0;
const SUCCESS_H: f64 = 120.0;
const MARKS_TOP: f64 = 370.0;
const ROW_H: f64 = 26.0;

/// Escape text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Maps wall-clock times to x pixels over the run.
struct Scale {
    start_ms: i64,
    span_ms: f64,
}

impl Scale {
    fn new(start: Timestamp, end: Timestamp) -> Self {
        let start_ms = start.as_millisecond();
        let span_ms = ((end.as_millisecond() - start_ms) as f64).max(1000.0);
        Scale { start_ms, span_ms }
    }

    fn x_ms(&self, ms: i64) -> f64 {
        let f = ((ms - self.start_ms) as f64 / self.span_ms).clamp(0.0, 1.0);
        LEFT + f * PLOT_W
    }

    fn x(&self, t: Timestamp) -> f64 {
        self.x_ms(t.as_millisecond())
    }
}

fn kind_name(kind: MarkKind) -> &'static str {
    match kind {
        MarkKind::Fault => "fault",
        MarkKind::Detected => "detected",
        MarkKind::Healed => "healed",
        MarkKind::Info => "info",
    }
}

fn kind_colour(kind: MarkKind) -> &'static str {
    match kind {
        MarkKind::Fault => "#d62728",
        MarkKind::Detected => "#ff7f0e",
        MarkKind::Healed => "#2ca02c",
        MarkKind::Info => "#7f7f7f",
    }
}

/// Render the run as an SVG document.
pub fn render(report: &RunReport) -> String {
    let scale = Scale::new(report.started_at, report.finished_at);
    let rows = report.layers.len().max(1) as f64;
    let height = MARKS_TOP + rows * ROW_H + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<title>selfheal demo timeline, namespace {}</title>
<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>
<text x="{LEFT}" y="24" font-size="16" font-weight="bold">self-healing timeline: {} ({} → {})</text>"#,
        escape(&report.namespace),
        escape(&report.namespace),
        escape(&report.started_at.strftime("%H:%M:%S").to_string()),
        escape(&report.finished_at.strftime("%H:%M:%S").to_string()),
    );

    // Layer bands across all panels, so each panel shows which layer it was.
    for l in &report.layers {
        let (x0, x1) = (scale.x(l.started_at), scale.x(l.finished_at));
        let fill = match l.status {
            Status::Healed => "#eaf5ea",
            Status::Failed => "#fbe9e9",
            Status::NotAvailable => "#f2f2f2",
        };
        let _ = writeln!(
            s,
            r#"<g class="layer-band" data-layer="{n}"><rect x="{x0:.1}" y="{REPLICAS_TOP}" width="{w:.1}" height="{h:.1}" fill="{fill}"/><text x="{tx:.1}" y="{ty:.1}" font-size="11">L{n}</text></g>"#,
            n = l.layer,
            w = (x1 - x0).max(1.0),
            h = MARKS_TOP + rows * ROW_H - REPLICAS_TOP,
            tx = x0 + 2.0,
            ty = REPLICAS_TOP + 11.0,
        );
    }

    // Panel 1: ready replicas, a step line.
    let max_ready = report
        .replicas
        .iter()
        .map(|p| p.ready)
        .max()
        .unwrap_or(1)
        .max(1);
    panel_frame(
        &mut s,
        REPLICAS_TOP,
        REPLICAS_H,
        "ready replicas",
        &max_ready.to_string(),
        "0",
    );
    let y_ready = |r: i32| REPLICAS_TOP + REPLICAS_H - (r as f64 / max_ready as f64) * REPLICAS_H;
    let mut points = Vec::new();
    let mut last: Option<i32> = None;
    for p in &report.replicas {
        let x = scale.x(p.at);
        if let Some(prev) = last {
            points.push(format!("{x:.1},{:.1}", y_ready(prev)));
        }
        points.push(format!("{x:.1},{:.1}", y_ready(p.ready)));
        last = Some(p.ready);
    }
    if let Some(prev) = last {
        points.push(format!(
            "{:.1},{:.1}",
            scale.x(report.finished_at),
            y_ready(prev)
        ));
    }
    let _ = writeln!(
        s,
        r##"<polyline id="ready-replicas" fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        points.join(" ")
    );

    // Panel 2: success rate per second of load.
    panel_frame(
        &mut s,
        SUCCESS_TOP,
        SUCCESS_H,
        "success rate",
        "100 %",
        "0 %",
    );
    let load_start = report.load_started_at.as_millisecond();
    let mut rate_points = Vec::new();
    for b in &report.load_series {
        let total = b.ok + b.failed;
        if total == 0 {
            continue;
        }
        let x = scale.x_ms(load_start + (b.second as i64) * 1000 + 500);
        let y = SUCCESS_TOP + SUCCESS_H - (b.ok as f64 / total as f64) * SUCCESS_H;
        rate_points.push(format!("{x:.1},{y:.1}"));
        if b.failed > 0 {
            let _ = writeln!(
                s,
                r##"<circle class="failures" cx="{x:.1}" cy="{y:.1}" r="2.5" fill="#d62728"><title>{} failed of {} in second {}</title></circle>"##,
                b.failed, total, b.second
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<polyline id="success-rate" fill="none" stroke="#2ca02c" stroke-width="1.5" points="{}"/>"##,
        rate_points.join(" ")
    );

    // Panel 3: one row of marks per layer.
    let _ = writeln!(
        s,
        r#"<text x="8" y="{:.1}" font-weight="bold">events</text>"#,
        MARKS_TOP - 8.0
    );
    for (i, l) in report.layers.iter().enumerate() {
        let y = MARKS_TOP + i as f64 * ROW_H + ROW_H / 2.0;
        let _ = writeln!(
            s,
            r##"<g class="layer" data-layer="{n}" data-status="{st}"><text x="8" y="{ty:.1}">L{n} {name}</text><line x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#cccccc"/>"##,
            n = l.layer,
            st = match l.status {
                Status::Healed => "healed",
                Status::Failed => "failed",
                Status::NotAvailable => "not_available",
            },
            name = escape(&truncate(&l.name, 18)),
            ty = y + 4.0,
            x2 = LEFT + PLOT_W,
        );
        for m in &l.marks {
            let x = scale.x(m.at);
            let colour = kind_colour(m.kind);
            let title = escape(&format!(
                "L{} {} at {}: {} ({})",
                l.layer,
                kind_name(m.kind),
                m.at.strftime("%H:%M:%S%.3f"),
                m.text,
                m.source
            ));
            let shape = match m.kind {
                MarkKind::Fault => format!(
                    r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{colour}"/>"#,
                    x - 6.0,
                    y - 6.0,
                    x + 6.0,
                    y - 6.0,
                    x,
                    y + 6.0
                ),
                MarkKind::Detected => {
                    format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="{colour}"/>"#)
                }
                MarkKind::Healed => format!(
                    r#"<rect x="{:.1}" y="{:.1}" width="11" height="11" fill="{colour}"/>"#,
                    x - 5.5,
                    y - 5.5
                ),
                MarkKind::Info => {
                    format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#)
                }
            };
            let _ = writeln!(
                s,
                r#"<g class="mark" data-layer="{}" data-kind="{}"><title>{title}</title>{shape}</g>"#,
                l.layer,
                kind_name(m.kind)
            );
        }
        if let Some(reason) = &l.reason {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555555">{}</text>"##,
                // Keep the text inside the picture even for a layer at the very end.
                scale.x(l.started_at).min(WIDTH - RIGHT - 520.0) + 4.0,
                y + 11.0,
                escape(&truncate(reason, 90))
            );
        }
        s.push_str("</g>\n");
    }
    // Legend and time axis.
    let legend_y = height - 12.0;
    let _ = writeln!(
        s,
        r##"<g class="legend"><path d="M{LEFT},{a:.1} L{b:.1},{a:.1} L{c:.1},{d:.1} Z" fill="#d62728"/><text x="{t1:.1}" y="{legend_y}">fault injected</text><circle cx="{c2:.1}" cy="{e:.1}" r="5" fill="#ff7f0e"/><text x="{t2:.1}" y="{legend_y}">detected</text><rect x="{c3:.1}" y="{f:.1}" width="10" height="10" fill="#2ca02c"/><text x="{t3:.1}" y="{legend_y}">healed</text><text x="{t4:.1}" y="{legend_y}">time →  ({secs:.0} s in all)</text></g>"##,
        a = legend_y - 9.0,
        b = LEFT + 10.0,
        c = LEFT + 5.0,
        d = legend_y + 1.0,
        t1 = LEFT + 14.0,
        c2 = LEFT + 120.0,
        e = legend_y - 4.0,
        t2 = LEFT + 128.0,
        c3 = LEFT + 200.0,
        f = legend_y - 9.0,
        t3 = LEFT + 214.0,
        t4 = LEFT + 290.0,
        secs = scale.span_ms / 1000.0,
    );
    s.push_str("</svg>\n");
    s
}

fn panel_frame(s: &mut String, top: f64, h: f64, label: &str, max: &str, min: &str) {
    let _ = writeln!(
        s,
        r##"<g class="panel"><rect x="{LEFT}" y="{top}" width="{PLOT_W}" height="{h}" fill="none" stroke="#999999"/><text x="8" y="{ly:.1}" font-weight="bold">{label}</text><text x="{mx:.1}" y="{my:.1}" text-anchor="end" font-size="10">{max}</text><text x="{mx:.1}" y="{by:.1}" text-anchor="end" font-size="10">{min}</text></g>"##,
        ly = top - 8.0,
        mx = LEFT - 4.0,
        my = top + 10.0,
        by = top + h,
        label = escape(label),
        max = escape(max),
        min = escape(min),
    );
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        text.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{LayerReport, ReplicaPoint};
    use crate::stats::SecondBucket;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp literal")
    }

    /// A small XML well-formedness check (no crate for it in the tree): balanced tags, quoted
    /// attributes, no raw `<`/`&` in text. Returns the elements as (name, attributes).
    type Element = (String, Vec<(String, String)>);

    fn parse(xml: &str) -> Result<Vec<Element>, String> {
        let body = xml
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .ok_or("missing XML declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut rest = body;
        let mut seen_root = false;
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            check_text(text)?;
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            let gt = rest[lt..].find('>').ok_or("unterminated tag")? + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("close without open: {name}"))?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs_text) = tag.split_once(' ').unwrap_or((tag, ""));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
            {
                return Err(format!("bad element name {name:?}"));
            }
            if stack.is_empty() {
                if seen_root {
                    return Err("two root elements".into());
                }
                seen_root = true;
            }
            let mut attrs = Vec::new();
            loop {
                attrs_text = attrs_text.trim_start();
                if attrs_text.is_empty() {
                    break;
                }
                let eq = attrs_text
                    .find('=')
                    .ok_or(format!("attribute without value in <{name}>"))?;
                let key = attrs_text[..eq].trim().to_owned();
                let after = &attrs_text[eq + 1..];
                let value_rest = after
                    .strip_prefix('"')
                    .ok_or(format!("unquoted attribute {key}"))?;
                let end = value_rest.find('"').ok_or("unterminated attribute")?;
                let value = &value_rest[..end];
                check_text(value)?;
                if attrs.iter().any(|(k, _): &(String, String)| *k == key) {
                    return Err(format!("duplicate attribute {key} in <{name}>"));
                }
                attrs.push((key, value.to_owned()));
                attrs_text = &value_rest[end + 1..];
            }
            elements.push((name.to_owned(), attrs));
            if !self_closing {
                stack.push(name.to_owned());
            }
        }
        check_text(rest)?;
        if !rest.trim().is_empty() || !stack.is_empty() || !seen_root {
            return Err(format!("unclosed elements: {stack:?}"));
        }
        Ok(elements)
    }

    fn check_text(text: &str) -> Result<(), String> {
        if text.contains('<') {
            return Err(format!("raw < in {text:?}"));
        }
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            let semi = rest[amp..].find(';').ok_or(format!("bare & in {text:?}"))? + amp;
            let entity = &rest[amp + 1..semi];
            if !["amp", "lt", "gt", "quot", "apos"].contains(&entity) {
                return Err(format!("unknown entity &{entity};"));
            }
            rest = &rest[semi + 1..];
        }
        Ok(())
    }

    fn report() -> RunReport {
        let mut layers = Vec::new();
        for n in 1..=6u8 {
            let base = 10 + i64::from(n) * 60;
            let at = |s: i64| Timestamp::from_second(1_767_261_600 + s).expect("valid");
            let mut l = LayerReport::new(n, at(base - 5));
            l.mark(
                at(base),
                MarkKind::Fault,
                "fault <with> \"quotes\" & more",
                "runner clock",
            );
            l.mark(at(base + 10), MarkKind::Detected, "detected", "Event");
            l.mark(at(base + 20), MarkKind::Healed, "healed", "pod condition");
            l.finish(at(base + 30));
            layers.push(l);
        }
        let mut seven = LayerReport::new(7, t("2026-01-01T10:07:00Z"));
        seven.status = Status::NotAvailable;
        seven.reason = Some("canary/deploy.sh & promote.sh are not in this tree yet".into());
        seven.finish(t("2026-01-01T10:07:00Z"));
        layers.push(seven);
        RunReport {
            namespace: "demo".into(),
            release: "selfheal-app".into(),
            load_target: "http://10.96.0.9/".into(),
            schedulable_nodes: 1,
            started_at: t("2026-01-01T10:00:00Z"),
            finished_at: t("2026-01-01T10:07:00Z"),
            ok: true,
            layers,
            replicas: vec![
                ReplicaPoint {
                    at: t("2026-01-01T10:00:00Z"),
                    ready: 2,
                },
                ReplicaPoint {
                    at: t("2026-01-01T10:01:15Z"),
                    ready: 1,
                },
                ReplicaPoint {
                    at: t("2026-01-01T10:01:30Z"),
                    ready: 2,
                },
                ReplicaPoint {
                    at: t("2026-01-01T10:05:30Z"),
                    ready: 4,
                },
            ],
            load_started_at: t("2026-01-01T10:00:01Z"),
            load_series: (0..400)
                .map(|second| SecondBucket {
                    second,
                    ok: 20,
                    failed: u64::from(second % 50 == 0),
                })
                .collect(),
        }
    }

    #[test]
    fn the_svg_is_well_formed_and_has_every_layers_events() {
        let svg = render(&report());
        let elements = parse(&svg).unwrap_or_else(|e| panic!("not well-formed: {e}\n{svg}"));
        assert_eq!(elements[0].0, "svg");
        let marks: Vec<(String, String)> = elements
            .iter()
            .filter(|(_, a)| a.iter().any(|(k, v)| k == "class" && v == "mark"))
            .map(|(_, a)| {
                let get = |key: &str| {
                    a.iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                (get("data-layer"), get("data-kind"))
            })
            .collect();
        for n in 1..=6 {
            for kind in ["fault", "detected", "healed"] {
                assert!(
                    marks.contains(&(n.to_string(), kind.to_owned())),
                    "layer {n} has no {kind} mark"
                );
            }
        }
        assert!(
            !marks.iter().any(|(l, _)| l == "7"),
            "layer 7 injected nothing"
        );
        assert!(svg.contains(r#"data-layer="7" data-status="not_available""#));
        assert!(svg.contains("fault &lt;with&gt; &quot;quotes&quot; &amp; more"));
        assert!(svg.contains(r#"<polyline id="ready-replicas""#));
        assert!(
            svg.contains(r#"class="failures""#),
            "failed seconds are marked"
        );
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        let decl = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
        assert!(parse(&format!("{decl}<svg><g></svg>")).is_err());
        assert!(parse(&format!("{decl}<svg a=1/>")).is_err());
        assert!(parse(&format!("{decl}<svg>a & b</svg>")).is_err());
        assert!(parse(&format!("{decl}<svg/><svg/>")).is_err());
        assert!(parse(&format!("{decl}<svg a=\"1\" a=\"2\"/>")).is_err());
        assert!(parse(&format!("{decl}<svg><g a=\"x &amp; y\">t</g></svg>")).is_ok());
    }

    #[test]
    fn an_empty_run_still_renders() {
        let mut r = report();
        r.layers.clear();
        r.replicas.clear();
        r.load_series.clear();
        r.finished_at = r.started_at;
        assert!(parse(&render(&r)).is_ok());
    }

    #[test]
    fn escape_covers_the_five_entities_and_control_characters() {
        assert_eq!(
            escape("<a & 'b'> \"c\"\u{1}"),
            "&lt;a &amp; &apos;b&apos;&gt; &quot;c&quot; "
        );
    }
}
