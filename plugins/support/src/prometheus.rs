//! A tolerant reader of the Prometheus text exposition format, as model servers write it
//! (trailing commas in label sets, `{a="x",}`; escapes; optional timestamps), and the count
//! checks the plugins apply: a counter must be a finite number ≥ 0, sums stay finite, and a
//! counter that went backwards was reset. Bad lines are counted, never fatal.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A metrics page read leniently: good lines become samples, bad lines are counted with
/// the first problem kept for messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub samples: Vec<Sample>,
    pub bad_lines: usize,
    pub first_problem: Option<String>,
}

/// Reads Prometheus text. Comments and blank lines are skipped; a line that does not parse
/// is counted, not fatal (the caller decides whether a page with no samples is garbage).
pub fn parse(text: &str) -> Page {
    let mut page = Page::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(sample) => page.samples.push(sample),
            Err(problem) => {
                page.bad_lines += 1;
                if page.first_problem.is_none() {
                    page.first_problem = Some(format!("line {}: {problem}", number + 1));
                }
            }
        }
    }
    page
}

/// Why one line of a metrics page was skipped (counted in [`Page::bad_lines`], never fatal).
/// Kept apart from [`crate::HttpError`]: it describes text that arrived, not a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("no metric name")]
    NoName,
    #[error("no value")]
    NoValue,
    #[error("value `{0}` is not a number")]
    BadValue(String),
    #[error("unexpected `{0}` after the value")]
    AfterValue(String),
    #[error("unexpected text after the timestamp")]
    AfterTimestamp,
    #[error("label without `=`")]
    LabelWithoutEquals,
    #[error("bad label name `{0}`")]
    BadLabelName(String),
    #[error("label `{0}` has no quoted value")]
    UnquotedLabel(String),
    #[error("label `{0}` value is not closed")]
    UnclosedLabel(String),
    #[error("labels not separated by `,`")]
    LabelsNotSeparated,
}

fn parse_line(line: &str) -> Result<Sample, LineError> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(LineError::NoName);
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or(LineError::NoValue)?;
    let value =
        parse_value(value_text).ok_or_else(|| LineError::BadValue(value_text.to_owned()))?;
    // An optional timestamp may follow; anything more is wrong.
    if let Some(timestamp) = fields.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err(LineError::AfterValue(timestamp.to_owned()));
    }
    if fields.next().is_some() {
        return Err(LineError::AfterTimestamp);
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Reads `key="value",key="value",}` (trailing comma allowed) and returns the labels and
/// the text after the closing brace.
/// Label pairs in the order written.
type Labels = Vec<(String, String)>;

fn parse_labels(mut text: &str) -> Result<(Labels, &str), LineError> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text.find('=').ok_or(LineError::LabelWithoutEquals)?;
        let key = text[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(LineError::BadLabelName(key.to_owned()));
        }
        let after_eq = text[eq + 1..].trim_start();
        let mut chars = after_eq.char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(LineError::UnquotedLabel(key.to_owned()));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or_else(|| LineError::UnclosedLabel(key.to_owned()))?;
        labels.push((key.to_owned(), value));
        text = after_eq[end + 1..].trim_start();
        if let Some(after_comma) = text.strip_prefix(',') {
            text = after_comma;
        } else if !text.starts_with('}') {
            return Err(LineError::LabelsNotSeparated);
        }
    }
}

/// Whether `value` can be a counter's or a queue gauge's value: finite and not negative.
/// Other values are left out and reported by name (`name = value`), never summed.
pub fn is_count(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

/// `total + value`, or `total` where the sum would pass the largest f64: counters stay
/// finite, so their deltas are numbers JSON can carry.
pub fn finite_sum(total: f64, value: f64) -> f64 {
    let sum = total + value;
    if sum.is_finite() { sum } else { total }
}

/// Change of a counter between two scrapes: nothing on the first sight (no previous value);
/// a counter that went backwards was reset, so its whole new value is the change.
pub fn counter_delta(previous: Option<f64>, current: f64) -> f64 {
    match previous {
        Some(p) if current >= p => current - p,
        Some(_) => current,
        None => 0.0,
    }
}

/// `name = value` for an error message about a sample that is no count.
pub fn describe_sample(name: &str, value: f64) -> String {
    format!("{name} = {value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_prometheus_forms_and_escapes_are_read_too() {
        let page = parse(
            "a_total 3\nb{x=\"1\"} 2.5 1700000000000\nc{q=\"say \\\"hi\\\"\\n\", r = \"}\"} +Inf\n",
        );
        assert_eq!(page.bad_lines, 0, "{:?}", page.first_problem);
        assert_eq!(page.samples[0].value, 3.0);
        assert_eq!(page.samples[1].value, 2.5);
        assert_eq!(page.samples[2].label("q"), Some("say \"hi\"\n"));
        assert_eq!(page.samples[2].label("r"), Some("}"));
        assert!(page.samples[2].value.is_infinite());
    }

    #[test]
    fn garbage_lines_are_counted_with_the_first_problem() {
        let page = parse("ok 1\n{nope} 3\nx{a=1} 2\ny{a=\"1\" 4\nz notanumber\nw 1 2 3\n");
        assert_eq!(page.samples.len(), 1);
        assert_eq!(page.bad_lines, 5);
        assert_eq!(
            page.first_problem.as_deref(),
            Some("line 2: no metric name")
        );
        let html = parse("<html><body>502 Bad Gateway</body></html>");
        assert!(html.samples.is_empty() && html.bad_lines == 1);
    }

    #[test]
    fn trailing_commas_timestamps_and_model_server_pages_are_read() {
        let page = parse(
            "# TYPE x counter\nx{model_name=\"m\",hostname=\"vm\",} 5.0\ny{a=\"1\"} 2 1712345678\n",
        );
        assert_eq!(page.bad_lines, 0, "{:?}", page.first_problem);
        assert_eq!(page.samples[0].label("model_name"), Some("m"));
        assert_eq!(page.samples[0].labels.len(), 2);
        assert_eq!(page.samples[1].value, 2.0);
    }

    #[test]
    fn counts_are_finite_and_not_negative_and_sums_stay_finite() {
        assert!(is_count(0.0) && is_count(1e308));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            assert!(!is_count(bad), "{bad}");
        }
        assert_eq!(finite_sum(1.5e308, 1.5e308), 1.5e308);
        assert_eq!(finite_sum(1.0, 2.0), 3.0);
        assert_eq!(describe_sample("a", f64::NAN), "a = NaN");
        assert_eq!(describe_sample("a", f64::INFINITY), "a = inf");
    }

    #[test]
    fn counters_that_go_backwards_count_as_reset() {
        assert_eq!(counter_delta(Some(10.0), 15.0), 5.0);
        assert_eq!(counter_delta(Some(10.0), 3.0), 3.0);
        assert_eq!(counter_delta(None, 42.0), 0.0);
    }
}
