//! Parsing of load traces: one requests-per-second value per line (the line index is the
//! second), or `timestamp,value` CSV with an optional header.

use crate::error::{ForecastError, Result};

/// A parsed trace: parallel timestamps (seconds) and rates (requests per second).
/// Values are kept as written (NaN, negatives and zeros included); hygiene is the
/// forecasters' job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Timestamps in seconds.
    pub times_s: Vec<f64>,
    /// Requests per second at each timestamp.
    pub rps: Vec<f64>,
}

impl Trace {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.rps.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.rps.is_empty()
    }

    /// A trace from one value per second starting at t = 0.
    pub fn from_per_second(values: &[f64]) -> Self {
        Self {
            times_s: (0..values.len()).map(|i| i as f64).collect(),
            rps: values.to_vec(),
        }
    }
}

fn parse_number(text: &str, line: usize, what: &str) -> Result<f64> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| ForecastError::MalformedLine {
            line,
            reason: format!("{what} {:?} is not a number", text.trim()),
        })
}

/// Parses trace text. Blank lines and lines starting with `#` are skipped; in the
/// one-value-per-line format the timestamp of a value is its 0-based line index, so
/// skipped lines read as gaps.
pub fn parse_trace(text: &str) -> Result<Trace> {
    let mut trace = Trace::default();
    let mut csv: Option<bool> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let is_csv = *csv.get_or_insert(line.contains(','));
        if is_csv {
            let mut fields = line.split(',');
            let (Some(t), Some(v), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(ForecastError::MalformedLine {
                    line: line_no,
                    reason: "expected `timestamp,value`".to_string(),
                });
            };
            if trace.is_empty() && t.trim().parse::<f64>().is_err() {
                // A header line such as `timestamp,rps`.
                continue;
            }
            trace.times_s.push(parse_number(t, line_no, "timestamp")?);
            trace.rps.push(parse_number(v, line_no, "value")?);
        } else {
            if line.contains(',') {
                return Err(ForecastError::MalformedLine {
                    line: line_no,
                    reason: "mixes csv and single-value lines".to_string(),
                });
            }
            trace.times_s.push(index as f64);
            trace.rps.push(parse_number(line, line_no, "value")?);
        }
    }
    if trace.is_empty() {
        return Err(ForecastError::EmptyTrace);
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_value_per_line() {
        let t = parse_trace("5\n7\n\n9\n").unwrap();
        assert_eq!(t.times_s, vec![0.0, 1.0, 3.0]);
        assert_eq!(t.rps, vec![5.0, 7.0, 9.0]);
    }

    #[test]
    fn parses_csv_with_header() {
        let t = parse_trace("timestamp,rps\n100,5\n101,6.5\n").unwrap();
        assert_eq!(t.times_s, vec![100.0, 101.0]);
        assert_eq!(t.rps, vec![5.0, 6.5]);
    }

    #[test]
    fn reports_line_of_malformed_value() {
        let err = parse_trace("5\n6\nabc\n").unwrap_err();
        assert_eq!(
            err,
            ForecastError::MalformedLine {
                line: 3,
                reason: "value \"abc\" is not a number".to_string()
            }
        );
        assert!(err.to_string().starts_with("line 3: "));
    }

    #[test]
    fn reports_bad_csv_row() {
        let err = parse_trace("1,2\n2,3,4\n").unwrap_err();
        assert!(matches!(err, ForecastError::MalformedLine { line: 2, .. }));
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(
            parse_trace("\n# only a comment\n"),
            Err(ForecastError::EmptyTrace)
        );
    }

    #[test]
    fn keeps_non_finite_values_for_the_sanitizer() {
        let t = parse_trace("NaN\ninf\n-3\n").unwrap();
        assert!(t.rps[0].is_nan());
        assert!(t.rps[1].is_infinite());
        assert_eq!(t.rps[2], -3.0);
    }
}
