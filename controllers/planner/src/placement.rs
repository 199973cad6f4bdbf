//! Placement of a plan's replicas on the nodes of a cluster, for a backend that spans
//! several nodes (see `docs/planner.md`, "Cluster placement").
//!
//! Model: a node offers `cpus` and `gpus` to the pipeline (what is free plus what the
//! pipeline's own replicas hold, alive nodes only; the caller works that out). One replica
//! of an assignment with `c` cores needs `c` CPUs on one node and, when its variant runs on
//! a GPU, one whole GPU there too ([`replica_need`]). A plan places when its replicas pack
//! onto the nodes within every node's CPUs and GPUs: a bin packing with few item sizes.
//!
//! [`pack`] decides it: first-fit decreasing, then, when that fails, an exact depth-first
//! search with the symmetries of identical replicas and identical nodes removed, within a
//! step budget (`None`: no budget, the brute force's exact answer). Where the budget runs
//! out the answer is [`Packing::Undecided`], which callers read as "does not place", so a
//! plan they hand on always places.
//!
//! The planner ([`solve_placed`]) first solves the problem without placement (a relaxation:
//! every placeable plan is one of its plans) and keeps its optimum when that places; else
//! the MILP with per-node replica counts decides ([`crate::milp::solve_milp_placed`]), which
//! is exact. Only when the MILP fails does a documented repair take over.

use infadapt_model::{Pipeline, Placement, Plan, Variant};
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
use crate::solution::{PlanError, Solution};

/// What one node of a cluster offers the pipeline's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCapacity {
    /// The backend's identifier of the node (what a placement names).
    pub id: String,
    /// CPUs the plan may use there: free ones plus those the pipeline's replicas hold.
    pub cpus: f64,
    /// GPUs the plan may use there, counted the same way.
    pub gpus: f64,
    /// Of `cpus`, those the pipeline's own replicas hold now (starting ones included): a
    /// replica that starts goes to the rest first ([`place_plan_near`]).
    pub held_cpus: f64,
    /// Of `gpus`, those the pipeline's own replicas hold now.
    pub held_gpus: f64,
}

/// What one replica needs on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaNeed {
    pub gpus: u32,
    pub cpus: u32,
}

impl ReplicaNeed {
    /// Nothing (the dominance key's value without nodes).
    pub const NONE: ReplicaNeed = ReplicaNeed { gpus: 0, cpus: 0 };
}

/// Slack on capacity comparisons (backends report fractional CPUs as floats).
const CAPACITY_SLACK: f64 = 1e-9;

/// Steps of the exact search the planner and the control loop allow before they read a plan
/// as not placeable.
pub const SEARCH_BUDGET: u64 = 200_000;

/// Whether a replica of `variant` holds a GPU: a variant with GPU memory (or whose GPU
/// memory was not measured, which is never read as "CPU only") does; a variant whose GPU
/// memory is 0 runs on CPUs alone.
pub fn replica_needs_gpu(variant: &Variant) -> bool {
    variant.gpu_mem_mb != Some(0.0)
}

/// What one replica of `variant` with `cores` cores needs on its node.
pub fn replica_need(variant: &Variant, cores: u32) -> ReplicaNeed {
    ReplicaNeed {
        gpus: u32::from(replica_needs_gpu(variant)),
        cpus: cores,
    }
}

/// Whether one replica needing `need` fits `node` when the node is empty.
pub fn fits_node(need: ReplicaNeed, node: &NodeCapacity) -> bool {
    f64::from(need.cpus) <= node.cpus + CAPACITY_SLACK
        && f64::from(need.gpus) <= node.gpus + CAPACITY_SLACK
}

/// Whether one replica needing `need` fits some node of `nodes` (always with no nodes).
pub fn fits_some_node(need: ReplicaNeed, nodes: &[NodeCapacity]) -> bool {
    nodes.is_empty() || nodes.iter().any(|n| fits_node(need, n))
}

/// Replicas of one variant of a stage to place.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub stage: String,
    pub variant: String,
    pub need: ReplicaNeed,
    pub count: u32,
}

/// The answer of [`pack`].
#[derive(Debug, Clone, PartialEq)]
pub enum Packing {
    /// Per group, the replicas on each node (in the order of the nodes).
    Placed(Vec<Vec<u32>>),
    /// No packing exists (proven).
    Impossible(String),
    /// The search ran out of its budget.
    Undecided,
}

/// Replicas of one need, all groups with it together.
struct Class {
    need: ReplicaNeed,
    count: u32,
}

/// `a (4 CPUs, 0 GPUs), b (2 CPUs, 1 GPU)`.
pub fn describe_nodes(nodes: &[NodeCapacity]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "{} ({} CPUs, {} GPUs)",
                n.id,
                crate::report::round_for_message(n.cpus),
                crate::report::round_for_message(n.gpus)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Packs `groups` onto `nodes` (see the module docs); `budget` bounds the exact search's
/// steps (`None`: unbounded).
pub fn pack(groups: &[Group], nodes: &[NodeCapacity], budget: Option<u64>) -> Packing {
    let mut classes: Vec<Class> = Vec::new();
    for g in groups.iter().filter(|g| g.count > 0) {
        match classes.iter_mut().find(|c| c.need == g.need) {
            Some(c) => c.count = c.count.saturating_add(g.count),
            None => classes.push(Class {
                need: g.need,
                count: g.count,
            }),
        }
    }
    // Largest first: GPUs, then CPUs.
    classes.sort_by_key(|c| std::cmp::Reverse(c.need));
    for c in &classes {
        if nodes.is_empty() || !fits_some_node(c.need, nodes) {
            return Packing::Impossible(format!(
                "a replica of {} CPUs and {} GPUs fits no node",
                c.need.cpus, c.need.gpus
            ));
        }
    }
    let cpus_needed: f64 = classes
        .iter()
        .map(|c| f64::from(c.need.cpus) * f64::from(c.count))
        .sum();
    let gpus_needed: f64 = classes
        .iter()
        .map(|c| f64::from(c.need.gpus) * f64::from(c.count))
        .sum();
    let cpus_offered: f64 = nodes.iter().map(|n| n.cpus.max(0.0)).sum();
    let gpus_offered: f64 = nodes.iter().map(|n| n.gpus.max(0.0)).sum();
    if cpus_needed > cpus_offered + CAPACITY_SLACK {
        return Packing::Impossible(format!(
            "the replicas need {} CPUs, the nodes offer {} together",
            crate::report::round_for_message(cpus_needed),
            crate::report::round_for_message(cpus_offered)
        ));
    }
    if gpus_needed > gpus_offered + CAPACITY_SLACK {
        return Packing::Impossible(format!(
            "the replicas need {} GPUs, the nodes offer {} together",
            crate::report::round_for_message(gpus_needed),
            crate::report::round_for_message(gpus_offered)
        ));
    }
    let mut per_class = match first_fit_decreasing(&classes, nodes) {
        Some(counts) => counts,
        None => {
            let mut search = Search {
                classes: &classes,
                left_cpus: nodes.iter().map(|n| n.cpus).collect(),
                left_gpus: nodes.iter().map(|n| n.gpus).collect(),
                counts: vec![vec![0; nodes.len()]; classes.len()],
                steps: 0,
                budget,
                exhausted: false,
            };
            if search.place(0, 0, 0, cpus_needed) {
                search.counts
            } else if search.exhausted {
                return Packing::Undecided;
            } else {
                return Packing::Impossible(format!(
                    "the replicas do not pack onto the nodes {}",
                    describe_nodes(nodes)
                ));
            }
        }
    };
    let needs: Vec<ReplicaNeed> = classes.iter().map(|c| c.need).collect();
    Packing::Placed(distribute(groups, &needs, &mut per_class, nodes.len()))
}

/// Hands the replicas per node of each need (`per_need[i][node]` for `needs[i]`) to the
/// groups with that need, in group order: per group, its replicas on each of the `nodes`.
pub(crate) fn distribute(
    groups: &[Group],
    needs: &[ReplicaNeed],
    per_need: &mut [Vec<u32>],
    nodes: usize,
) -> Vec<Vec<u32>> {
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut row = vec![0u32; nodes];
        if g.count > 0
            && let Some(ci) = needs.iter().position(|&n| n == g.need)
        {
            let mut left = g.count;
            for (n, slot) in per_need[ci].iter_mut().enumerate() {
                let take = left.min(*slot);
                row[n] += take;
                *slot -= take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        out.push(row);
    }
    out
}
/// First-fit decreasing: each replica, largest first, on the first node with room.
fn first_fit_decreasing(classes: &[Class], nodes: &[NodeCapacity]) -> Option<Vec<Vec<u32>>> {
    let mut cpus: Vec<f64> = nodes.iter().map(|n| n.cpus).collect();
    let mut gpus: Vec<f64> = nodes.iter().map(|n| n.gpus).collect();
    let mut counts = vec![vec![0u32; nodes.len()]; classes.len()];
    for (ci, c) in classes.iter().enumerate() {
        let (need_c, need_g) = (f64::from(c.need.cpus), f64::from(c.need.gpus));
        let mut left = c.count;
        for n in 0..nodes.len() {
            if left == 0 {
                break;
            }
            let by_cpu = if need_c > 0.0 {
                ((cpus[n] + CAPACITY_SLACK) / need_c).floor().max(0.0)
            } else {
                f64::from(left)
            };
            let by_gpu = if need_g > 0.0 {
                ((gpus[n] + CAPACITY_SLACK) / need_g).floor().max(0.0)
            } else {
                f64::from(left)
            };
            let take = by_cpu.min(by_gpu).min(f64::from(left)) as u32;
            counts[ci][n] = take;
            cpus[n] -= need_c * f64::from(take);
            gpus[n] -= need_g * f64::from(take);
            left -= take;
        }
        if left > 0 {
            return None;
        }
    }
    Some(counts)
}

/// The exact search: replicas one at a time in class order; a replica of the same class as
/// the one before goes to the same node or a later one, and of nodes with the same room
/// left only the first is tried.
struct Search<'a> {
    classes: &'a [Class],
    left_cpus: Vec<f64>,
    left_gpus: Vec<f64>,
    counts: Vec<Vec<u32>>,
    steps: u64,
    budget: Option<u64>,
    exhausted: bool,
}

impl Search<'_> {
    /// Places replica `placed` of class `class` (and all after it), the previous replica of
    /// the class on node `from`; `remaining_cpus` is what the unplaced replicas need.
    fn place(&mut self, class: usize, placed: u32, from: usize, remaining_cpus: f64) -> bool {
        if class == self.classes.len() {
            return true;
        }
        if placed == self.classes[class].count {
            return self.place(class + 1, 0, 0, remaining_cpus);
        }
        self.steps += 1;
        if self.budget.is_some_and(|b| self.steps > b) {
            self.exhausted = true;
            return false;
        }
        let free: f64 = self.left_cpus.iter().map(|c| c.max(0.0)).sum();
        if remaining_cpus > free + CAPACITY_SLACK {
            return false;
        }
        let need = self.classes[class].need;
        let (need_c, need_g) = (f64::from(need.cpus), f64::from(need.gpus));
        for n in from..self.left_cpus.len() {
            if need_c > self.left_cpus[n] + CAPACITY_SLACK
                || need_g > self.left_gpus[n] + CAPACITY_SLACK
            {
                continue;
            }
            // A node with the same room as an earlier one tried here gives the same subtree
            // up to swapping the two, with fewer nodes open to the class's next replicas.
            let twin = (from..n).any(|m| {
                (self.left_cpus[m] - self.left_cpus[n]).abs() <= CAPACITY_SLACK
                    && (self.left_gpus[m] - self.left_gpus[n]).abs() <= CAPACITY_SLACK
            });
            if twin {
                continue;
            }
            self.left_cpus[n] -= need_c;
            self.left_gpus[n] -= need_g;
            self.counts[class][n] += 1;
            if self.place(class, placed + 1, n, remaining_cpus - need_c) {
                return true;
            }
            self.left_cpus[n] += need_c;
            self.left_gpus[n] += need_g;
            self.counts[class][n] -= 1;
            if self.exhausted {
                return false;
            }
        }
        false
    }
}

/// The groups of `plan`'s replicas, in stage and assignment order. A variant the pipeline
/// does not know counts as CPU-only.
pub fn plan_groups(pipeline: &Pipeline, plan: &Plan) -> Vec<Group> {
    plan.stages
        .iter()
        .flat_map(|sp| {
            let stage = pipeline.stages.iter().find(|s| s.name == sp.stage);
            sp.assignments.iter().map(move |a| {
                let gpus = stage
                    .and_then(|s| s.variants.iter().find(|v| v.name == a.variant))
                    .map_or(0, |v| u32::from(replica_needs_gpu(v)));
                Group {
                    stage: sp.stage.clone(),
                    variant: a.variant.clone(),
                    need: ReplicaNeed {
                        gpus,
                        cpus: a.cores,
                    },
                    count: a.replicas,
                }
            })
        })
        .collect()
}

/// Per-node counts of a packing as placements (stage, variant, node, replicas), zero
/// counts left out; replicas of a variant on one node are summed.
pub fn placements(groups: &[Group], counts: &[Vec<u32>], nodes: &[NodeCapacity]) -> Vec<Placement> {
    let mut out: Vec<Placement> = Vec::new();
    for (g, row) in groups.iter().zip(counts) {
        for (n, &count) in row.iter().enumerate() {
            if count == 0 {
                continue;
            }
            match out
                .iter_mut()
                .find(|p| p.stage == g.stage && p.variant == g.variant && p.node == nodes[n].id)
            {
                Some(p) => p.replicas += count,
                None => out.push(Placement {
                    stage: g.stage.clone(),
                    variant: g.variant.clone(),
                    node: nodes[n].id.clone(),
                    replicas: count,
                }),
            }
        }
    }
    out
}

/// Places `plan`'s replicas on `nodes` (see the module docs), or says why it cannot:
/// [`PlanError::Unplaceable`] when no packing exists or none was found within
/// [`SEARCH_BUDGET`] steps. With no nodes there is nothing to place: an empty placement.
pub fn place_plan(
    pipeline: &Pipeline,
    plan: &Plan,
    nodes: &[NodeCapacity],
) -> Result<Vec<Placement>, PlanError> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let groups = plan_groups(pipeline, plan);
    match pack(&groups, nodes, Some(SEARCH_BUDGET)) {
        Packing::Placed(counts) => Ok(placements(&groups, &counts, nodes)),
        Packing::Impossible(why) => Err(PlanError::Unplaceable(format!(
            "{why} ({})",
            describe_nodes(nodes)
        ))),
        Packing::Undecided => Err(PlanError::Unplaceable(format!(
            "no placement found within {SEARCH_BUDGET} search steps on the nodes {}",
            describe_nodes(nodes)
        ))),
    }
}

/// Like [`place_plan`], but keeps replicas where they run now (`running`: per stage,
/// variant and node, as the backend reports them) as far as the plan and the nodes allow,
/// so that a change moves as few replicas as it can: first each variant's replicas go to
/// the nodes it runs on, up to the count there and the room left; the rest are packed as
/// [`place_plan`] does, into the room no replica of the pipeline holds first (beyond each
/// node's `held_cpus` and `held_gpus`), so that a backend can start them before it stops
/// the ones they replace (make-before-break), and into the room those hold when that does
/// not pack. When nothing packs, the plan is placed afresh ([`place_plan`]).
pub fn place_plan_near(
    pipeline: &Pipeline,
    plan: &Plan,
    nodes: &[NodeCapacity],
    running: &[Placement],
) -> Result<Vec<Placement>, PlanError> {
    if nodes.is_empty() || running.is_empty() {
        return place_plan(pipeline, plan, nodes);
    }
    let groups = plan_groups(pipeline, plan);
    let mut left: Vec<NodeCapacity> = nodes.to_vec();
    let mut kept: Vec<Vec<u32>> = vec![vec![0; nodes.len()]; groups.len()];
    let mut rest: Vec<Group> = groups.clone();
    for (g, group) in rest.iter_mut().enumerate() {
        for p in running
            .iter()
            .filter(|p| p.stage == group.stage && p.variant == group.variant)
        {
            let Some(n) = nodes.iter().position(|node| node.id == p.node) else {
                continue;
            };
            let mut take = p.replicas.min(group.count);
            while take > 0 {
                let (cpus, gpus) = (
                    f64::from(group.need.cpus) * f64::from(take),
                    f64::from(group.need.gpus) * f64::from(take),
                );
                if cpus <= left[n].cpus + CAPACITY_SLACK && gpus <= left[n].gpus + CAPACITY_SLACK {
                    left[n].cpus -= cpus;
                    left[n].gpus -= gpus;
                    break;
                }
                take -= 1;
            }
            kept[g][n] += take;
            group.count -= take;
        }
    }
    // The room no replica of the pipeline holds: what is left beyond the kept replicas
    // and beyond everything the pipeline's replicas hold (starting ones included).
    let free_first: Vec<NodeCapacity> = nodes
        .iter()
        .zip(&left)
        .map(|(node, room)| NodeCapacity {
            cpus: room.cpus.min(node.cpus - node.held_cpus).max(0.0),
            gpus: room.gpus.min(node.gpus - node.held_gpus).max(0.0),
            ..room.clone()
        })
        .collect();
    let packed = match pack(&rest, &free_first, Some(SEARCH_BUDGET)) {
        placed @ Packing::Placed(_) => placed,
        _ => pack(&rest, &left, Some(SEARCH_BUDGET)),
    };
    match packed {
        Packing::Placed(added) => {
            for (row, more) in kept.iter_mut().zip(added) {
                for (count, extra) in row.iter_mut().zip(more) {
                    *count += extra;
                }
            }
            Ok(placements(&groups, &kept, nodes))
        }
        Packing::Impossible(_) | Packing::Undecided => place_plan(pipeline, plan, nodes),
    }
}

/// Whether `placement` puts exactly `plan`'s replicas on `nodes` within every node's CPUs
/// and GPUs (the check the tests and the control loop apply to what they hand on).
pub fn placement_fits(
    pipeline: &Pipeline,
    plan: &Plan,
    placement: &[Placement],
    nodes: &[NodeCapacity],
) -> bool {
    let groups = plan_groups(pipeline, plan);
    let mut cpus: Vec<f64> = nodes.iter().map(|n| n.cpus).collect();
    let mut gpus: Vec<f64> = nodes.iter().map(|n| n.gpus).collect();
    for p in placement {
        let Some(n) = nodes.iter().position(|n| n.id == p.node) else {
            return false;
        };
        let Some(g) = groups
            .iter()
            .find(|g| g.stage == p.stage && g.variant == p.variant)
        else {
            return false;
        };
        cpus[n] -= f64::from(g.need.cpus) * f64::from(p.replicas);
        gpus[n] -= f64::from(g.need.gpus) * f64::from(p.replicas);
    }
    let within = cpus
        .iter()
        .chain(&gpus)
        .all(|left| *left >= -CAPACITY_SLACK);
    let counted = groups.iter().all(|g| {
        let placed: u32 = placement
            .iter()
            .filter(|p| p.stage == g.stage && p.variant == g.variant)
            .map(|p| p.replicas)
            .sum();
        let planned: u32 = groups
            .iter()
            .filter(|h| h.stage == g.stage && h.variant == g.variant)
            .map(|h| h.count)
            .sum();
        placed == planned
    });
    within && counted
}

/// Solves `problem`, whose `nodes` are set, for the best plan that places (see the module
/// docs). `Ok(None)`: no plan places.
pub(crate) fn solve_placed(problem: &Problem) -> Result<Option<Solution>, PlanError> {
    let Some(mut relaxed) = crate::solve_unplaced(problem)? else {
        return Ok(None);
    };
    if let Ok(placement) = place_plan(&problem.pipeline, &relaxed.plan, &problem.nodes) {
        relaxed.placement = placement;
        return Ok(Some(relaxed));
    }
    crate::milp::solve_milp_placed(problem)
}

/// Repair when the MILP with placement fails: the Pareto-DP (no mixes) re-solved with the
/// host-core limit below the cores of each plan that did not place, until one places (at
/// most [`REPAIR_ROUNDS`] rounds). Not exact; the solution says so.
pub(crate) fn repair(problem: &Problem, reason: &str) -> Option<Solution> {
    let mut tightened = problem.clone();
    tightened.allow_mix = false;
    for _ in 0..REPAIR_ROUNDS {
        let warning = format!(
            "placement repair: {reason}; the plan comes from the pareto-dp re-solved with \
             fewer cores until it placed, and may not be optimal"
        );
        let mut found = crate::solve_with_dp(
            &tightened,
            format!("pareto-dp (placement repair: {reason})"),
            vec![warning],
        )?;
        match place_plan(&problem.pipeline, &found.plan, &problem.nodes) {
            Ok(placement) => {
                found.placement = placement;
                return Some(found);
            }
            Err(_) => {
                let cores = found.plan.cores();
                if cores <= 1 {
                    return None;
                }
                tightened.limits.total_cores = Some(u32::try_from(cores - 1).unwrap_or(u32::MAX));
            }
        }
    }
    None
}

/// Most re-solves of the repair.
const REPAIR_ROUNDS: usize = 32;
