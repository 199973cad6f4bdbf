//! TOML reading with positions: walks a parsed document key by key, converts values, and
//! collects every problem (syntax, type, range, unknown key) with file:line:col and the
//! field path, so that a bad file is reported whole in one go.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use infadapt_model::settings::KeySpec;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `pipeline.stage[1].batch_sizes`.
    pub field: String,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if d.field.is_empty() {
                write!(f, "{}:{}:{}: {}", self.file, d.line, d.column, d.message)?;
            } else {
                write!(
                    f,
                    "{}:{}:{}: {}: {}",
                    self.file, d.line, d.column, d.field, d.message
                )?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Reads an input file whole: its display name and text, or one diagnostic at 1:1 saying
/// why it could not be read.
pub fn read_source(path: &std::path::Path) -> Result<(String, String), Diagnostics> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((name, text)),
        Err(e) => Err(Diagnostics {
            file: name,
            items: vec![Diagnostic {
                line: 1,
                column: 1,
                field: String::new(),
                message: format!("cannot read file: {e}"),
            }],
        }),
    }
}

/// The text of a file with its line starts, to turn byte offsets into line:column.
#[derive(Debug)]
pub struct SourceText<'a> {
    pub name: String,
    pub text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceText<'a> {
    pub fn new(name: impl Into<String>, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceText {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}

/// Collects diagnostics while a document is walked.
#[derive(Debug)]
pub struct Reader<'a> {
    source: SourceText<'a>,
    problems: RefCell<Vec<Diagnostic>>,
}

impl<'a> Reader<'a> {
    pub fn new(source: SourceText<'a>) -> Self {
        Reader {
            source,
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Records a problem at a byte span.
    pub fn report(&self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = self.source.position(span.start);
        self.problems.borrow_mut().push(Diagnostic {
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Whether any problem was recorded so far.
    pub fn has_problems(&self) -> bool {
        !self.problems.borrow().is_empty()
    }

    /// The problems found, sorted by position; `Ok(())` when there are none.
    pub fn finish(&self) -> Result<(), Diagnostics> {
        let mut items = self.problems.borrow().clone();
        if items.is_empty() {
            return Ok(());
        }
        items.sort_by_key(|d| (d.line, d.column));
        items.dedup();
        Err(Diagnostics {
            file: self.source.name.clone(),
            items,
        })
    }

    pub fn file_name(&self) -> &str {
        &self.source.name
    }
}

/// Parses `text` (recovering past syntax errors) and hands the root table to `walk`.
/// Returns what `walk` built, or every problem found.
pub fn read_document<T>(
    name: &str,
    text: &str,
    walk: impl FnOnce(&Reader<'_>, &TableReader<'_, '_>) -> Option<T>,
) -> Result<T, Diagnostics> {
    let reader = Reader::new(SourceText::new(name, text));
    let (root, errors) = DeTable::parse_recoverable(text);
    for error in &errors {
        let span = error.span().unwrap_or(0..0);
        reader.report(span, "", error.message().trim_end_matches('.').to_owned());
    }
    let table = TableReader::new(&reader, root.get_ref(), root.span(), String::new());
    let built = walk(&reader, &table);
    table.finish();
    reader.finish()?;
    built.ok_or_else(|| Diagnostics {
        file: name.to_owned(),
        items: vec![Diagnostic {
            line: 1,
            column: 1,
            field: String::new(),
            message: "file could not be read".into(),
        }],
    })
}

/// A table being read: hands out its fields and remembers which keys were consumed, so that
/// `finish` can report unknown keys.
#[derive(Debug)]
pub struct TableReader<'r, 'i> {
    reader: &'r Reader<'r>,
    table: &'r DeTable<'i>,
    span: Range<usize>,
    path: String,
    used: RefCell<BTreeSet<String>>,
}

thread_local! {
    /// The fields readers on this thread asked for, while [`record_fields`] runs.
    static ASKED: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
}

/// Checks a number read at a field (dotted path without indices): a message when it is out
/// of the field's range.
pub type RangeCheck = fn(field: &str, value: f64) -> Option<String>;

thread_local! {
    /// The range check [`with_range_check`] put in force on this thread.
    static RANGE_CHECK: std::cell::Cell<Option<RangeCheck>> = const { std::cell::Cell::new(None) };
}

/// Runs `read` with every number a [`TableReader`] reads checked by `check` (a value it
/// refuses is reported at its position and read as absent).
pub fn with_range_check<R>(check: RangeCheck, read: impl FnOnce() -> R) -> R {
    let before = RANGE_CHECK.with(|c| c.replace(Some(check)));
    let result = read();
    RANGE_CHECK.with(|c| c.set(before));
    result
}

/// Runs `read` and returns, with its result, every field a [`TableReader`] asked for during
/// it (present or not), as dotted paths with array indices left out (`pipeline.stage.name`).
/// The configuration reference's test uses it to prove the reference lists exactly the keys
/// the reader reads.
pub fn record_fields<R>(read: impl FnOnce() -> R) -> (R, BTreeSet<String>) {
    ASKED.with(|asked| *asked.borrow_mut() = Some(BTreeSet::new()));
    let result = read();
    let fields = ASKED
        .with(|asked| asked.borrow_mut().take())
        .unwrap_or_default()
        .into_iter()
        .map(|field| without_indices(&field))
        .collect();
    (result, fields)
}

/// `pipeline[0].stage[2].name` → `pipeline.stage.name`.
pub fn without_indices(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut depth = 0usize;
    for c in field.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Describes a TOML value's type for messages.
fn kind(value: &DeValue<'_>) -> &'static str {
    value.type_str()
}

impl<'r, 'i> TableReader<'r, 'i> {
    fn new(
        reader: &'r Reader<'r>,
        table: &'r DeTable<'i>,
        span: Range<usize>,
        path: String,
    ) -> Self {
        TableReader {
            reader,
            table,
            span,
            path,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// Dotted path of `key` inside this table.
    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Span of the table itself (its header, or its first key).
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn reader(&self) -> &'r Reader<'r> {
        self.reader
    }

    fn entry(&self, key: &str) -> Option<(Range<usize>, &'r Spanned<DeValue<'i>>)> {
        self.used.borrow_mut().insert(key.to_owned());
        ASKED.with(|asked| {
            if let Some(asked) = asked.borrow_mut().as_mut() {
                asked.insert(self.field(key));
            }
        });
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, v)| (k.span(), v))
    }

    /// Whether the table has `key` (marks it as known).
    pub fn has(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// Reports a problem about `key` at its value (or at the table when it is absent).
    pub fn report(&self, key: &str, message: impl Into<String>) {
        let span = self.entry(key).map_or(self.span.clone(), |(_, v)| v.span());
        self.reader.report(span, &self.field(key), message);
    }

    /// Reports a problem about a key nested in this table, given by its dotted path
    /// (`models.resnet18`, `variants.small.command`, `stages[0].name`): at the key itself
    /// when `at_key` (an unknown key), else at its value; where the path leaves the file
    /// (a key the daemon adds, or one that is absent), at the deepest part that is there.
    pub fn report_path(&self, path: &str, at_key: bool, message: impl Into<String>) {
        let mut span = self.span.clone();
        let mut table = Some(self.table);
        'walk: for segment in path.split('.').filter(|s| !s.is_empty()) {
            let (name, indices) = match segment.find('[') {
                Some(at) => (&segment[..at], &segment[at..]),
                None => (segment, ""),
            };
            let Some((key_span, found)) = table.and_then(|t| {
                t.iter()
                    .find(|(k, _)| k.get_ref().as_ref() == name)
                    .map(|(k, v)| (k.span(), v))
            }) else {
                break;
            };
            span = if at_key { key_span } else { found.span() };
            let mut value = Some(found);
            for index in indices
                .split(['[', ']'])
                .filter(|s| !s.is_empty())
                .map(str::parse::<usize>)
            {
                let item = match (index, value.and_then(|v| v.get_ref().as_array())) {
                    (Ok(i), Some(items)) => items.get(i),
                    _ => None,
                };
                match item {
                    Some(item) => {
                        span = item.span();
                        value = Some(item);
                    }
                    None => break 'walk,
                }
            }
            table = value.and_then(|v| v.get_ref().as_table());
        }
        self.reader.report(span, &self.field(path), message);
    }

    fn missing(&self, key: &str) {
        self.reader.report(
            self.span.clone(),
            &self.field(key),
            "missing required field",
        );
    }

    fn wrong_type(&self, key: &str, value: &Spanned<DeValue<'i>>, expected: &str) {
        self.reader.report(
            value.span(),
            &self.field(key),
            format!("expected {expected}, found {}", kind(value.get_ref())),
        );
    }

    /// Reports `v` at `key` when the range check in force refuses it (see
    /// [`with_range_check`]); whether it passed.
    fn in_range(&self, key: &str, value: &Spanned<DeValue<'i>>, v: f64) -> bool {
        let problem = RANGE_CHECK.with(|check| {
            check
                .get()
                .and_then(|check| check(&without_indices(&self.field(key)), v))
        });
        match problem {
            Some(message) => {
                self.reader.report(value.span(), &self.field(key), message);
                false
            }
            None => true,
        }
    }

    /// A number (integer or float) at `key`, if present.
    pub fn opt_f64(&self, key: &str) -> Option<f64> {
        let (_, value) = self.entry(key)?;
        match value_f64(value.get_ref()) {
            Some(v) if v.is_finite() => self.in_range(key, value, v).then_some(v),
            Some(v) => {
                self.reader.report(
                    value.span(),
                    &self.field(key),
                    format!("must be a finite number, got {v}"),
                );
                None
            }
            None => {
                self.wrong_type(key, value, "a number");
                None
            }
        }
    }

    /// A required number at `key`.
    pub fn req_f64(&self, key: &str) -> Option<f64> {
        if !self.has(key) {
            self.missing(key);
            return None;
        }
        self.opt_f64(key)
    }

    /// A non-negative integer that fits in `u32`, if present.
    pub fn opt_u32(&self, key: &str) -> Option<u32> {
        let (_, value) = self.entry(key)?;
        self.as_u32(key, value)
    }

    fn as_u32(&self, key: &str, value: &Spanned<DeValue<'i>>) -> Option<u32> {
        match value.get_ref().as_integer() {
            Some(int) => match i64::from_str_radix(int.as_str(), int.radix())
                .ok()
                .and_then(|v| u32::try_from(v).ok())
            {
                Some(v) => self.in_range(key, value, f64::from(v)).then_some(v),
                None => {
                    self.reader.report(
                        value.span(),
                        &self.field(key),
                        format!("must be an integer between 0 and {}", u32::MAX),
                    );
                    None
                }
            },
            None => {
                self.wrong_type(key, value, "an integer");
                None
            }
        }
    }

    /// A required `u32` at `key`.
    pub fn req_u32(&self, key: &str) -> Option<u32> {
        if !self.has(key) {
            self.missing(key);
            return None;
        }
        self.opt_u32(key)
    }

    /// A number at the key `spec` defines, checked against its range (the range check in
    /// force, if any, checks the same spec first): out of it, it is reported with the key's
    /// message and read as absent.
    pub fn opt_number(&self, spec: &KeySpec) -> Option<f64> {
        let v = self.opt_f64(spec.name)?;
        self.within(spec, v).then_some(v)
    }

    /// Reads each number key into its slot, in order, as [`TableReader::opt_number`] does; a
    /// key that is absent or refused leaves its slot as it was (the settings' default).
    pub fn read_numbers<'k>(&self, slots: impl IntoIterator<Item = (&'k KeySpec, &'k mut f64)>) {
        for (spec, slot) in slots {
            if let Some(v) = self.opt_number(spec) {
                *slot = v;
            }
        }
    }

    /// An integer at the key `spec` defines, checked as [`TableReader::opt_number`] checks.
    pub fn opt_count(&self, spec: &KeySpec) -> Option<u32> {
        let v = self.opt_u32(spec.name)?;
        self.within(spec, f64::from(v)).then_some(v)
    }

    /// Reports `v` at `spec`'s key when it is out of the key's range; whether it is in it.
    fn within(&self, spec: &KeySpec, v: f64) -> bool {
        match spec.check(v) {
            Ok(()) => true,
            Err(problem) => {
                self.report(spec.name, problem.to_string());
                false
            }
        }
    }

    /// A boolean at `key`, if present.
    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        let (_, value) = self.entry(key)?;
        let v = value.get_ref().as_bool();
        if v.is_none() {
            self.wrong_type(key, value, "true or false");
        }
        v
    }

    /// A string at `key`, if present.
    pub fn opt_str(&self, key: &str) -> Option<String> {
        let (_, value) = self.entry(key)?;
        let v = value.get_ref().as_str().map(str::to_owned);
        if v.is_none() {
            self.wrong_type(key, value, "a string");
        }
        v
    }

    /// A required string at `key`.
    pub fn req_str(&self, key: &str) -> Option<String> {
        if !self.has(key) {
            self.missing(key);
            return None;
        }
        self.opt_str(key)
    }

    /// One of `choices` at `key`, if present.
    pub fn opt_choice(&self, key: &str, choices: &[&str]) -> Option<String> {
        let s = self.opt_str(key)?;
        if choices.contains(&s.as_str()) {
            Some(s)
        } else {
            self.report(
                key,
                format!(
                    "unknown value `{s}`, expected one of: {}",
                    choices.join(", ")
                ),
            );
            None
        }
    }

    /// An array of `u32` at `key`, if present; each element checked.
    pub fn opt_u32_list(&self, key: &str) -> Option<Vec<u32>> {
        let (_, value) = self.entry(key)?;
        let Some(items) = value.get_ref().as_array() else {
            self.wrong_type(key, value, "an array of integers");
            return None;
        };
        let values: Vec<Option<u32>> = items.iter().map(|item| self.as_u32(key, item)).collect();
        values.into_iter().collect()
    }

    /// An array of strings at `key` with each element's span, if present.
    pub fn opt_str_list(&self, key: &str) -> Option<Vec<Spanned<String>>> {
        let (_, value) = self.entry(key)?;
        let Some(items) = value.get_ref().as_array() else {
            self.wrong_type(key, value, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(s) => out.push(Spanned::new(item.span(), s.to_owned())),
                None => {
                    self.wrong_type(key, item, "a string");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// The sub-table at `key`, if present.
    pub fn opt_table(&self, key: &str) -> Option<TableReader<'r, 'i>> {
        let (key_span, value) = self.entry(key)?;
        match value.get_ref().as_table() {
            Some(table) => Some(TableReader::new(
                self.reader,
                table,
                key_span,
                self.field(key),
            )),
            None => {
                self.wrong_type(key, value, "a table");
                None
            }
        }
    }

    /// The array of tables at `key` (`[[key]]`), empty when absent.
    pub fn tables(&self, key: &str) -> Vec<TableReader<'r, 'i>> {
        let Some((_, value)) = self.entry(key) else {
            return Vec::new();
        };
        let Some(items) = value.get_ref().as_array() else {
            self.wrong_type(key, value, "an array of tables");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref().as_table() {
                Some(table) => out.push(TableReader::new(
                    self.reader,
                    table,
                    item.span(),
                    format!("{}[{i}]", self.field(key)),
                )),
                None => self.wrong_type(key, item, "a table"),
            }
        }
        out
    }

    /// Reports every key of this table that no accessor asked for.
    pub fn finish(&self) {
        let used = self.used.borrow();
        let known: Vec<&str> = used.iter().map(String::as_str).collect();
        for (key, _) in self.table.iter() {
            let name = key.get_ref().as_ref();
            if !used.contains(name) {
                let hint = closest(name, &known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                self.reader.report(
                    key.span(),
                    &self.field(name),
                    format!("unknown field{hint}"),
                );
            }
        }
    }
}

fn value_f64(value: &DeValue<'_>) -> Option<f64> {
    if let Some(int) = value.as_integer() {
        return i64::from_str_radix(int.as_str(), int.radix())
            .ok()
            .map(|v| v as f64);
    }
    value
        .as_float()
        .and_then(|f| f.as_str().replace('_', "").parse::<f64>().ok())
}

/// The known key nearest to `name` by edit distance, when it is close enough to be a typo.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str, walk: impl FnOnce(&TableReader<'_, '_>)) -> Vec<String> {
        let result = read_document("f.toml", text, |_, root| {
            walk(root);
            Some(())
        });
        match result {
            Ok(()) => Vec::new(),
            Err(d) => d.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn reports_every_problem_with_position_and_field() {
        let text = "a = \"x\"\nb = -1\n[t]\nc = 1.5\nzzz = 2\n";
        let found = problems(text, |root| {
            root.opt_f64("a");
            root.opt_u32("b");
            let t = root.opt_table("t").expect("t");
            t.req_str("c");
            t.req_f64("missing");
            t.finish();
        });
        assert_eq!(
            found,
            vec![
                "f.toml:1:5: a: expected a number, found string",
                "f.toml:2:5: b: must be an integer between 0 and 4294967295",
                "f.toml:3:2: t.missing: missing required field",
                "f.toml:4:5: t.c: expected a string, found float",
                "f.toml:5:1: t.zzz: unknown field",
            ]
        );
    }

    #[test]
    fn nested_paths_are_reported_at_their_key_or_value_or_the_deepest_part_there() {
        let text = "[b]\nurl = \"x\"\n[b.models]\nsmall = 3\n[[b.list]]\nname = 1\n";
        let found = problems(text, |root| {
            let b = root.opt_table("b").expect("b");
            b.report_path("url", true, "unknown key");
            b.report_path("models.small", false, "must be a model name");
            b.report_path("list[0].name", false, "must be a string");
            b.report_path("models.absent", false, "is required");
            b.report_path("pipeline.stages", false, "added by the daemon");
        });
        assert_eq!(
            found,
            vec![
                "f.toml:1:2: b.pipeline.stages: added by the daemon",
                "f.toml:2:1: b.url: unknown key",
                "f.toml:3:1: b.models.absent: is required",
                "f.toml:4:9: b.models.small: must be a model name",
                "f.toml:6:8: b.list[0].name: must be a string",
            ]
        );
    }

    #[test]
    fn suggests_the_nearest_known_key() {
        let found = problems("slo_m = 3\n", |root| {
            root.opt_f64("slo_ms");
        });
        assert_eq!(
            found,
            vec!["f.toml:1:1: slo_m: unknown field (did you mean `slo_ms`?)"]
        );
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let found = problems("a = 1\nb = \n", |root| {
            root.opt_f64("a");
            root.opt_f64("b");
        });
        assert!(!found.is_empty());
        assert!(found[0].starts_with("f.toml:2:"), "{found:?}");
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        let found = problems("x = nan\ny = inf\n", |root| {
            root.opt_f64("x");
            root.opt_f64("y");
        });
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("finite"));
    }
}
