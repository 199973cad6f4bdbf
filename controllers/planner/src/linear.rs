//! A small linear-model container shared by the MILP solver and the LP export, so that the
//! exported model is exactly the one solved.

use std::time::Duration;

use microlp::{ComparisonOp, OptimizationDirection, SolveOptions};

/// Domain of a model variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarKind {
    Binary,
    Continuous,
    /// A whole number within the bounds (replica counts per node).
    Integer,
}

/// One variable: name, objective coefficient (maximised), bounds and kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Var {
    pub name: String,
    pub objective: f64,
    pub lower: f64,
    pub upper: f64,
    pub kind: VarKind,
    /// What the variable stands for, for the export header.
    pub meaning: String,
}

/// Sense of a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sense {
    Le,
    Ge,
    Eq,
}

/// One constraint `Σ coefficient·variable sense rhs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub name: String,
    pub terms: Vec<(usize, f64)>,
    pub sense: Sense,
    pub rhs: f64,
}

/// A maximisation model.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct LinearModel {
    pub vars: Vec<Var>,
    pub rows: Vec<Row>,
}

/// Outcome of solving a model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ModelOutcome {
    /// Values of all variables; `proven` is false when the time limit stopped the search.
    Solved {
        values: Vec<f64>,
        proven: bool,
    },
    Infeasible,
    /// The solver gave up (time limit without incumbent, numerical failure, ...).
    Failed(String),
}

/// A bound of an integer variable as the solver takes it (saturating at `i32`'s range).
fn whole_bound(value: f64) -> i32 {
    value
        .round()
        .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

impl LinearModel {
    pub(crate) fn add_var(
        &mut self,
        name: String,
        objective: f64,
        bounds: (f64, f64),
        kind: VarKind,
        meaning: String,
    ) -> usize {
        self.vars.push(Var {
            name,
            objective,
            lower: bounds.0,
            upper: bounds.1,
            kind,
            meaning,
        });
        self.vars.len() - 1
    }

    pub(crate) fn add_row(
        &mut self,
        name: String,
        terms: Vec<(usize, f64)>,
        sense: Sense,
        rhs: f64,
    ) {
        self.rows.push(Row {
            name,
            terms,
            sense,
            rhs,
        });
    }

    /// Solves the model by branch and bound within `time_limit`.
    pub(crate) fn solve(&self, time_limit: Duration) -> ModelOutcome {
        let mut lp = microlp::Problem::new(OptimizationDirection::Maximize);
        let vars: Vec<microlp::Variable> =
            self.vars
                .iter()
                .map(|v| match v.kind {
                    VarKind::Binary => lp.add_binary_var(v.objective),
                    VarKind::Continuous => lp.add_var(v.objective, (v.lower, v.upper)),
                    VarKind::Integer => lp
                        .add_integer_var(v.objective, (whole_bound(v.lower), whole_bound(v.upper))),
                })
                .collect();
        for row in &self.rows {
            let op = match row.sense {
                Sense::Le => ComparisonOp::Le,
                Sense::Ge => ComparisonOp::Ge,
                Sense::Eq => ComparisonOp::Eq,
            };
            // Merge repeated variables (the solver wants each at most once per row).
            let mut terms: Vec<(usize, f64)> = Vec::with_capacity(row.terms.len());
            for &(var, coefficient) in &row.terms {
                match terms.iter_mut().find(|t| t.0 == var) {
                    Some(t) => t.1 += coefficient,
                    None => terms.push((var, coefficient)),
                }
            }
            lp.add_constraint(
                terms
                    .iter()
                    .map(|&(var, c)| (vars[var], c))
                    .collect::<Vec<_>>(),
                op,
                row.rhs,
            );
        }
        let mut options = SolveOptions::default();
        options.time_limit = Some(time_limit);
        match lp.solve_with(options) {
            Ok(outcome) => {
                let proven = outcome.is_optimal();
                match outcome.into_solution() {
                    Ok(solution) => ModelOutcome::Solved {
                        values: vars.iter().map(|&v| solution.var_value(v)).collect(),
                        proven,
                    },
                    Err(_) => ModelOutcome::Failed(
                        "time limit reached before any plan was found".to_owned(),
                    ),
                }
            }
            Err(microlp::Error::Infeasible) => ModelOutcome::Infeasible,
            Err(e) => ModelOutcome::Failed(e.to_string()),
        }
    }
}
