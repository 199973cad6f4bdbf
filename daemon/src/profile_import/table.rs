//! CSV reading with positions: headers, rows, cells parsed to numbers with the line and
//! column of each problem.

use super::*;
use std::rc::Rc;

pub(super) struct Table<'a> {
    pub(super) input: InputText<'a>,
    pub(super) headers: Rc<[String]>,
    pub(super) rows: Vec<Row<'a>>,
}

/// One data row with what messages about it need: file, line and the header names.
pub(super) struct Row<'a> {
    pub(super) file: &'a str,
    pub(super) line: u64,
    pub(super) headers: Rc<[String]>,
    pub(super) cells: csv::StringRecord,
}

pub(super) fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes())
}

pub(super) fn header_row(input: InputText<'_>) -> Result<Vec<String>, Problem> {
    let mut reader = csv_reader(input.text);
    match reader.headers() {
        Ok(headers) if headers.iter().any(|h| !h.is_empty()) => {
            Ok(headers.iter().map(str::to_owned).collect())
        }
        Ok(_) => Err(Problem::at(input.name, 1, None, "the table is empty")),
        Err(e) => Err(csv_problem(input, &e)),
    }
}

/// Where the record at `byte` really starts. After a CRLF line end the CSV reader reports
/// the record as starting at the `\n` (and counts one line too few), so line ends are
/// skipped here and lines are counted from the text itself.
pub(super) fn record_start(text: &str, byte: u64) -> usize {
    let bytes = text.as_bytes();
    let mut start = usize::try_from(byte).map_or(bytes.len(), |b| b.min(bytes.len()));
    while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
        start += 1;
    }
    start
}

/// 1-based line of the record the CSV reader places at `byte`.
pub(super) fn line_at(text: &str, byte: u64) -> u64 {
    let start = record_start(text, byte);
    1 + text.as_bytes()[..start]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// [`line_at`] for increasing offsets, in linear time over the whole file: `seen` is the
/// (byte, line) reached so far.
pub(super) fn advance_line(text: &str, seen: &mut (usize, u64), byte: u64) -> u64 {
    let start = record_start(text, byte);
    if start < seen.0 {
        return line_at(text, byte);
    }
    seen.1 += text.as_bytes()[seen.0..start]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64;
    seen.0 = start;
    seen.1
}

pub(super) fn csv_problem(input: InputText<'_>, error: &csv::Error) -> Problem {
    let file = input.name;
    let line = error
        .position()
        .map_or(1, |p| line_at(input.text, p.byte()));
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("the row has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        _ => error.to_string(),
    };
    Problem::at(file, line, None, message)
}

/// Reads the whole table; `None` when even the header is unreadable. Rows that cannot be
/// read are reported and left out.
pub(super) fn read_table<'a>(
    input: InputText<'a>,
    problems: &mut Vec<Problem>,
) -> Option<Table<'a>> {
    let headers: Rc<[String]> = match header_row(input) {
        Ok(headers) => headers.into(),
        Err(problem) => {
            problems.push(problem);
            return None;
        }
    };
    let mut rows = Vec::new();
    let mut newlines_seen = (0usize, 1u64);
    for record in csv_reader(input.text).records() {
        match record {
            Ok(cells) => rows.push(Row {
                file: input.name,
                line: cells.position().map_or(0, |p| {
                    advance_line(input.text, &mut newlines_seen, p.byte())
                }),
                headers: Rc::clone(&headers),
                cells,
            }),
            Err(e) => problems.push(csv_problem(input, &e)),
        }
    }
    Some(Table {
        input,
        headers,
        rows,
    })
}

impl Table<'_> {
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    pub(super) fn find_any(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|n| self.find(n))
    }

    /// Positions of `names`, or `None` after reporting every missing one.
    pub(super) fn require(
        &self,
        names: &[&str],
        problems: &mut Vec<Problem>,
    ) -> Option<Vec<usize>> {
        let found: Vec<Option<usize>> = names.iter().map(|n| self.find(n)).collect();
        for (name, position) in names.iter().zip(&found) {
            if position.is_none() {
                problems.push(Problem::at(
                    self.input.name,
                    1,
                    Some(name),
                    "missing column",
                ));
            }
        }
        found.into_iter().collect()
    }
}

impl Row<'_> {
    pub(super) fn problem(&self, column: usize, message: impl Into<String>) -> Problem {
        let name = self.headers.get(column).map_or("?", String::as_str);
        Problem::at(self.file, self.line, Some(name), message)
    }

    pub(super) fn cell(&self, column: usize) -> &str {
        self.cells.get(column).unwrap_or("")
    }

    /// Non-empty text.
    pub(super) fn text(&self, column: usize) -> Result<&str, Problem> {
        match self.cell(column) {
            "" => Err(self.problem(column, "missing value")),
            text => Ok(text),
        }
    }

    /// A number, `None` when empty or NaN.
    pub(super) fn number(&self, column: usize) -> Result<Option<f64>, Problem> {
        let cell = self.cell(column);
        if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
            return Ok(None);
        }
        match cell.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(self.problem(column, format!("`{cell}` is not a number"))),
        }
    }

    /// A number `>= 0`, `None` when empty or NaN.
    pub(super) fn non_negative(&self, column: usize) -> Result<Option<f64>, Problem> {
        match self.number(column)? {
            Some(v) if v < 0.0 => Err(self.problem(
                column,
                format!("`{}` must not be negative", self.cell(column)),
            )),
            v => Ok(v),
        }
    }

    /// A number `> 0`, `None` when empty or NaN.
    pub(super) fn positive_or_missing(&self, column: usize) -> Result<Option<f64>, Problem> {
        match self.number(column)? {
            Some(v) if v <= 0.0 => {
                Err(self.problem(column, format!("`{}` must be positive", self.cell(column))))
            }
            v => Ok(v),
        }
    }

    /// A required number `> 0`.
    pub(super) fn positive(&self, column: usize) -> Result<f64, Problem> {
        self.positive_or_missing(column)?
            .ok_or_else(|| self.problem(column, "missing value"))
    }

    /// A required whole number `>= 1` (`4` and `4.0` both read as 4).
    pub(super) fn count(&self, column: usize) -> Result<u32, Problem> {
        let value = self.positive(column)?;
        if value.fract() != 0.0 || value > f64::from(u32::MAX) {
            return Err(self.problem(
                column,
                format!("`{}` is not a whole number", self.cell(column)),
            ));
        }
        Ok(value as u32)
    }
}

pub(super) fn take<T>(result: Result<T, Problem>, problems: &mut Vec<Problem>) -> Option<T> {
    result.map_err(|p| problems.push(p)).ok()
}
