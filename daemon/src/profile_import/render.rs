//! Writing a catalog as TOML (one line per point, a comment header) and the summary line
//! of a variant; number and string formatting for it.

use infadapt_model::{Catalog, CatalogVariant, ProfilePoint};

/// Writes a catalog in the format `Catalog::from_toml_str` reads, one line per point, with
/// `header` as `# ` comment lines on top.
pub fn render_catalog(header: &[String], catalog: &Catalog) -> String {
    let mut out = String::new();
    for entry in header {
        if entry.is_empty() {
            out.push_str("#\n");
        }
        for line in entry.lines() {
            if line.is_empty() {
                out.push_str("#\n");
            } else {
                out.push_str(&format!("# {line}\n"));
            }
        }
    }
    if !header.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!("schema = {}\n", catalog.schema));
    for variant in &catalog.variants {
        out.push_str("\n[[variant]]\n");
        out.push_str(&format!("name = {}\n", toml_string(&variant.name)));
        out.push_str(&format!("accuracy = {}\n", toml_float(variant.accuracy)));
        out.push_str(&format!(
            "load_time_s = {}\n",
            toml_float(variant.load_time_s)
        ));
        match variant.gpu_mem_mb {
            Some(0.0) => {}
            Some(mb) => out.push_str(&format!("gpu_mem_mb = {}\n", toml_float(mb))),
            None => out.push_str(&format!(
                "gpu_mem_mb = {}\n",
                toml_string(infadapt_model::catalog::UNMEASURED)
            )),
        }
        if !variant.source.is_empty() {
            out.push_str(&format!("source = {}\n", toml_string(&variant.source)));
        }
        out.push_str("points = [\n");
        for p in &variant.points {
            out.push_str(&format!("  {{ batch = {}, cores = {}", p.batch, p.cores));
            for (key, value) in [
                ("p99_ms", p.p99_ms),
                ("mean_ms", p.mean_ms),
                ("throughput_rps", p.throughput_rps),
            ] {
                if let Some(value) = value {
                    out.push_str(&format!(", {key} = {}", toml_float(value)));
                }
            }
            out.push_str(" },\n");
        }
        out.push_str("]\n");
    }
    out
}

/// One line describing a variant: points, batch and core ranges, fit error.
pub fn summary_line(variant: &CatalogVariant) -> String {
    let built = match variant.to_variant() {
        Ok(built) => built,
        Err(e) => return format!("{}: invalid ({e})", variant.name),
    };
    let range = |f: fn(&ProfilePoint) -> u32| {
        let lo = variant.points.iter().map(f).min().unwrap_or(0);
        let hi = variant.points.iter().map(f).max().unwrap_or(0);
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    let (fit, which) = match built.profile.p99_fit() {
        Some(fit) => (fit, "p99"),
        None => (built.profile.mean_fit(), "mean"),
    };
    format!(
        "{}: {} point{}, batch {}, cores {}, {which} fit rmse {:.2} ms",
        variant.name,
        variant.points.len(),
        if variant.points.len() == 1 { "" } else { "s" },
        range(|p| p.batch),
        range(|p| p.cores),
        fit.rmse_ms
    )
}

pub(super) fn round_micro(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// Numbers as people write them: `750`, `0.5`.
pub(super) fn fmt_number(value: f64) -> String {
    format!("{value}")
}

pub(super) fn toml_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 {
            "inf".to_owned()
        } else {
            "-inf".to_owned()
        }
    } else {
        format!("{value:?}")
    }
}

pub(super) fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
