//! The LP export: read back with a small LP-format reader, the exported model evaluated at
//! the chosen plan gives `objective` and meets every constraint, and solving it gives the
//! same optimum as the planner.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{close, random_problem};
use infadapt_planner::{AccuracyMode, Problem, Solution, SolverChoice, export_lp, solve};
use microlp::{ComparisonOp, OptimizationDirection};

/// One parsed constraint: name, terms, sense and right-hand side.
type LpRow = (String, Vec<(usize, f64)>, String, f64);

/// A parsed LP file.
#[derive(Debug, Default)]
struct LpModel {
    names: Vec<String>,
    index: HashMap<String, usize>,
    objective: Vec<(usize, f64)>,
    rows: Vec<LpRow>,
    bounds: HashMap<usize, (f64, f64)>,
    binaries: Vec<usize>,
    meanings: HashMap<String, String>,
}

impl LpModel {
    fn var(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    /// Parses `+ 2 x - 3 y` style terms.
    fn terms(&mut self, tokens: &[&str]) -> Vec<(usize, f64)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let sign = match tokens[i] {
                "+" => 1.0,
                "-" => -1.0,
                other => panic!("expected a sign, got {other:?} in {tokens:?}"),
            };
            let coefficient: f64 = tokens[i + 1].parse().expect("coefficient");
            let var = self.var(tokens[i + 2]);
            out.push((var, sign * coefficient));
            i += 3;
        }
        out
    }

    fn parse(text: &str) -> LpModel {
        let mut m = LpModel::default();
        let mut section = "";
        let mut statements: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("\\ ") {
                if let Some((name, meaning)) = comment.split_once(" = ") {
                    m.meanings
                        .insert(name.trim().to_owned(), meaning.trim().to_owned());
                }
                continue;
            }
            if let s @ ("Maximize" | "Subject To" | "Bounds" | "Binaries" | "End") = line.trim() {
                section = match s {
                    "Maximize" => "obj",
                    "Subject To" => "rows",
                    "Bounds" => "bounds",
                    "Binaries" => "bin",
                    _ => "end",
                };
                continue;
            }
            // Continuation lines start with more indentation and no name.
            let starts_statement = match section {
                "obj" | "rows" => line
                    .split_whitespace()
                    .next()
                    .is_some_and(|t| t.ends_with(':')),
                _ => true,
            };
            if starts_statement || statements.is_empty() {
                statements.push((section.to_owned(), line.trim().to_owned()));
            } else {
                let last = statements.last_mut().expect("statement");
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        }
        for (section, text) in statements {
            let tokens: Vec<&str> = text.split_whitespace().collect();
            match section.as_str() {
                "obj" => m.objective = m.terms(&tokens[1..]),
                "rows" => {
                    let name = tokens[0].trim_end_matches(':').to_owned();
                    let n = tokens.len();
                    let terms = m.terms(&tokens[1..n - 2]);
                    m.rows.push((
                        name,
                        terms,
                        tokens[n - 2].to_owned(),
                        tokens[n - 1].parse().expect("rhs"),
                    ));
                }
                "bounds" => {
                    if tokens.len() == 5 {
                        let v = m.var(tokens[2]);
                        m.bounds.insert(
                            v,
                            (
                                tokens[0].parse().expect("lo"),
                                tokens[4].parse().expect("hi"),
                            ),
                        );
                    } else {
                        assert_eq!(tokens.len(), 3, "bound {text}");
                        let v = m.var(tokens[0]);
                        let value: f64 = tokens[2].parse().expect("fixed");
                        m.bounds.insert(v, (value, value));
                    }
                }
                "bin" => {
                    for t in tokens {
                        let v = m.var(t);
                        m.binaries.push(v);
                    }
                }
                _ => {}
            }
        }
        m
    }

    fn solve(&self) -> Option<f64> {
        let mut lp = microlp::Problem::new(OptimizationDirection::Maximize);
        let objective: HashMap<usize, f64> = self.objective.iter().copied().collect();
        let vars: Vec<microlp::Variable> = (0..self.names.len())
            .map(|i| {
                let c = objective.get(&i).copied().unwrap_or(0.0);
                if self.binaries.contains(&i) {
                    lp.add_binary_var(c)
                } else {
                    lp.add_var(
                        c,
                        self.bounds.get(&i).copied().unwrap_or((0.0, f64::INFINITY)),
                    )
                }
            })
            .collect();
        for (_, terms, sense, rhs) in &self.rows {
            let op = match sense.as_str() {
                "<=" => ComparisonOp::Le,
                ">=" => ComparisonOp::Ge,
                _ => ComparisonOp::Eq,
            };
            lp.add_constraint(
                terms.iter().map(|&(v, c)| (vars[v], c)).collect::<Vec<_>>(),
                op,
                *rhs,
            );
        }
        lp.set_time_limit(Duration::from_secs(60));
        match lp.solve() {
            Ok(outcome) => outcome.solution().map(|s| s.objective()),
            Err(microlp::Error::Infeasible) => None,
            Err(e) => panic!("solve failed: {e}"),
        }
    }

    /// Values of all variables for a plan, by the meaning of each variable.
    fn values_for(&self, problem: &Problem, solution: &Solution) -> Vec<f64> {
        let mut values = vec![0.0; self.names.len()];
        let mut products = Vec::new();
        let mut product = 1.0;
        for (k, sp) in solution.plan.stages.iter().enumerate() {
            let mut stage_accuracy = 0.0;
            for a in &sp.assignments {
                let meaning = format!(
                    "stage `{}` variant `{}` batch {} cores {} replicas {}",
                    sp.stage, a.variant, a.batch, a.cores, a.replicas
                );
                let x = self
                    .names
                    .iter()
                    .position(|n| {
                        n.starts_with(&format!("x_s{k}_")) && self.meanings.get(n) == Some(&meaning)
                    })
                    .unwrap_or_else(|| panic!("no variable for {meaning}"));
                values[x] = 1.0;
                if let Some(&s) = self.index.get(&self.names[x].replacen("x_", "s_", 1)) {
                    values[s] = a.share;
                }
                let accuracy = problem.pipeline.stages[k]
                    .variant(&a.variant)
                    .expect("variant")
                    .accuracy;
                stage_accuracy += a.share * accuracy;
            }
            product *= stage_accuracy;
            products.push(product);
            if let Some(&p) = self.index.get(&format!("p_s{k}")) {
                values[p] = product;
            }
        }
        for (i, name) in self.names.iter().enumerate() {
            if let Some(rest) = name.strip_prefix("z_s") {
                let (k, o) = rest.split_once("_o").expect("z name");
                let k: usize = k.parse().expect("stage");
                let x = self.index[&format!("x_s{k}_o{o}")];
                values[i] = values[x] * products[k - 1];
            }
        }
        values
    }
}

fn check_instance(problem: &Problem) -> bool {
    let Ok(solution) = solve(problem) else {
        return false;
    };
    let text = export_lp(problem).expect("export");
    assert!(
        text.lines().all(|l| l.len() <= 200 || l.starts_with('\\')),
        "long line"
    );
    let model = LpModel::parse(&text);
    let values = model.values_for(problem, &solution);
    let objective: f64 = model.objective.iter().map(|&(v, c)| c * values[v]).sum();
    assert!(
        close(objective, solution.objective),
        "exported objective {objective} != {}",
        solution.objective
    );
    for (name, terms, sense, rhs) in &model.rows {
        let lhs: f64 = terms.iter().map(|&(v, c)| c * values[v]).sum();
        let tol = 1e-7 * rhs.abs().max(1.0);
        let ok = match sense.as_str() {
            "<=" => lhs <= rhs + tol,
            ">=" => lhs >= rhs - tol,
            _ => (lhs - rhs).abs() <= tol,
        };
        assert!(ok, "row {name}: {lhs} {sense} {rhs} fails at the plan");
    }
    for (&v, &(lo, hi)) in &model.bounds {
        assert!(
            values[v] >= lo - 1e-9 && values[v] <= hi + 1e-9,
            "bound of {}",
            model.names[v]
        );
    }
    let optimum = model.solve().expect("the exported model is feasible");
    assert!(
        close(optimum, solution.objective),
        "exported optimum {optimum} != planner {}",
        solution.objective
    );
    true
}

#[test]
fn exported_model_has_the_planner_optimum() {
    let mut checked = [0usize; 3];
    for seed in 0..400u64 {
        let mut problem = random_problem(seed, 3);
        problem.solver = SolverChoice::Auto;
        let slot = if problem.accuracy_mode == AccuracyMode::Sum {
            0
        } else {
            1
        };
        if checked[slot] < 12 && check_instance(&problem) {
            checked[slot] += 1;
        }
        let mut single = random_problem(seed, 1);
        single.allow_mix = true;
        single.solver = SolverChoice::Milp;
        if checked[2] < 12 && check_instance(&single) {
            checked[2] += 1;
        }
        if checked.iter().all(|&c| c >= 12) {
            break;
        }
    }
    assert!(
        checked.iter().all(|&c| c >= 12),
        "too few feasible instances: {checked:?}"
    );
}

#[test]
fn export_has_sections_and_header() {
    let problem = random_problem(7, 2);
    if let Ok(text) = export_lp(&problem) {
        for section in ["Maximize", "Subject To", "Bounds", "Binaries", "End"] {
            assert!(text.lines().any(|l| l == section), "missing {section}");
        }
        assert!(text.starts_with("\\ infadapt planning model"));
        assert!(text.contains("\\ x_s0_o0 = stage `stage0` variant"));
    }
}
