//! Export of the planning MILP in CPLEX LP format, for inspection or for solving elsewhere.
//!
//! The exported model is the one [`crate::milp`] solves (built by the same code), so its
//! optimum equals [`crate::Solution::objective`]. The objective has no constant term.
//! Lines are wrapped so that none is longer than 200 characters.

use std::fmt::Write;

use crate::linear::{LinearModel, Sense, VarKind};
use crate::milp::{ModelKind, build_model};
use crate::problem::Problem;
use crate::solution::PlanError;

const LINE_WIDTH: usize = 200;

/// Writes the MILP of `problem` in CPLEX LP format.
///
/// # Errors
///
/// [`PlanError::InvalidProblem`] when the problem is malformed; [`PlanError::Infeasible`]
/// when a stage has no admissible option at all (there is nothing to write for it).
pub fn export_lp(problem: &Problem) -> Result<String, PlanError> {
    crate::validate::validate(problem)?;
    let built = build_model(problem);
    let empty = match &built.kind {
        ModelKind::Chain { options, .. } => options.iter().any(Vec::is_empty),
        ModelKind::Mix { options, .. } => options.is_empty(),
    };
    if empty {
        return Err(PlanError::Infeasible(Box::new(crate::diagnose::diagnose(
            problem,
        ))));
    }
    Ok(write_lp(problem, &built.model))
}

/// A number as LP readers take it (shortest representation that reads back exactly).
fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if (1e-4..1e12).contains(&a) {
        format!("{a}")
    } else {
        format!("{a:e}")
    }
}

/// Appends `+ c name` terms, wrapping lines.
fn write_terms(out: &mut String, line: &mut String, terms: impl Iterator<Item = (f64, String)>) {
    let mut any = false;
    for (c, name) in terms {
        if c == 0.0 {
            continue;
        }
        any = true;
        let term = format!(
            " {} {} {}",
            if c < 0.0 { "-" } else { "+" },
            number(c),
            name
        );
        if line.len() + term.len() > LINE_WIDTH {
            out.push_str(line);
            out.push('\n');
            line.clear();
            line.push_str("   ");
        }
        line.push_str(&term);
    }
    if !any {
        // An empty expression: write it as zero times some variable readers accept.
        line.push_str(" + 0 const_zero");
    }
}

fn write_lp(problem: &Problem, m: &LinearModel) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\\ infadapt planning model for pipeline `{}`",
        problem.pipeline.name
    );
    let _ = writeln!(
        out,
        "\\ load {} rps, slo {} ms, accuracy mode {}, objective: maximise alpha*accuracy - beta*cores - beta_gpu*gib - gamma*cold_start_s",
        problem.load_rps, problem.pipeline.slo_ms, problem.accuracy_mode
    );
    for v in &m.vars {
        let _ = writeln!(out, "\\ {} = {}", v.name, v.meaning);
    }
    out.push_str("Maximize\n");
    let mut line = String::from(" obj:");
    write_terms(
        &mut out,
        &mut line,
        m.vars.iter().map(|v| (v.objective, v.name.clone())),
    );
    out.push_str(&line);
    out.push_str("\nSubject To\n");
    for row in &m.rows {
        let mut line = format!(" {}:", row.name);
        write_terms(
            &mut out,
            &mut line,
            row.terms.iter().map(|&(i, c)| (c, m.vars[i].name.clone())),
        );
        let sense = match row.sense {
            Sense::Le => "<=",
            Sense::Ge => ">=",
            Sense::Eq => "=",
        };
        let rhs = if row.rhs < 0.0 {
            format!("-{}", number(row.rhs))
        } else {
            number(row.rhs)
        };
        let tail = format!(" {sense} {rhs}");
        if line.len() + tail.len() > LINE_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("   ");
        }
        let _ = writeln!(out, "{line}{tail}");
    }
    out.push_str("Bounds\n");
    for v in m
        .vars
        .iter()
        .filter(|v| matches!(v.kind, VarKind::Continuous | VarKind::Integer))
    {
        let _ = writeln!(
            out,
            " {} <= {} <= {}",
            number(v.lower),
            v.name,
            number(v.upper)
        );
    }
    if out.contains(" const_zero") {
        out.push_str(" const_zero = 0\n");
    }
    out.push_str("Binaries\n");
    let mut line = String::new();
    for v in m.vars.iter().filter(|v| v.kind == VarKind::Binary) {
        if line.len() + v.name.len() + 1 > LINE_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        line.push(' ');
        line.push_str(&v.name);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    let integers: Vec<&str> = m
        .vars
        .iter()
        .filter(|v| v.kind == VarKind::Integer)
        .map(|v| v.name.as_str())
        .collect();
    if !integers.is_empty() {
        out.push_str("General\n");
        let mut line = String::new();
        for name in integers {
            if line.len() + name.len() + 1 > LINE_WIDTH {
                out.push_str(&line);
                out.push('\n');
                line.clear();
            }
            line.push(' ');
            line.push_str(name);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("End\n");
    out
}
