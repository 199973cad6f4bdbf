//! Applying plans: validation, make-before-break reconciliation of replica pools, routing.

use infadapt_model::{Assignment, Pipeline, Plan, StagePlan};

use super::state::{Pool, Route};
use super::{EventKind, HostSim};
use crate::SimError;
use crate::report::{ApplyReport, LaneMode, StageChange};
use crate::service::ServiceTable;

/// Largest batch size the simulator accepts.
pub const MAX_BATCH: u32 = 4096;
/// Largest cores per replica the simulator accepts.
pub const MAX_CORES: u32 = 4096;
/// Largest replica count of one assignment the simulator accepts.
pub const MAX_REPLICAS: u32 = 100_000;

/// One validated assignment: the lane (variant index) and what it should run.
#[derive(Debug, Clone)]
struct Target {
    lane: usize,
    batch: u32,
    cores: u32,
    replicas: u32,
    /// Normalised so that a stage's shares sum to 1.
    share: f64,
}

/// Checks a plan against the pipeline; returns the targets per pipeline stage and the plan
/// in pipeline stage order with normalised shares.
fn validate_plan(pipeline: &Pipeline, plan: &Plan) -> Result<(Vec<Vec<Target>>, Plan), SimError> {
    for (i, sp) in plan.stages.iter().enumerate() {
        if pipeline.stages.iter().all(|s| s.name != sp.stage) {
            return Err(SimError::Plan(format!("unknown stage `{}`", sp.stage)));
        }
        if plan.stages[..i].iter().any(|o| o.stage == sp.stage) {
            return Err(SimError::Plan(format!(
                "stage `{}` is planned twice",
                sp.stage
            )));
        }
    }
    let mut targets = Vec::with_capacity(pipeline.stages.len());
    let mut normalised = Plan::default();
    for stage in &pipeline.stages {
        let bad = |problem: String| SimError::Plan(format!("stage `{}`: {problem}", stage.name));
        let sp = plan
            .stage(&stage.name)
            .ok_or_else(|| bad("missing from the plan".to_owned()))?;
        if sp.assignments.is_empty() {
            return Err(bad("has no assignment".to_owned()));
        }
        let mut stage_targets = Vec::with_capacity(sp.assignments.len());
        for (i, a) in sp.assignments.iter().enumerate() {
            let bad = |problem: String| bad(format!("variant `{}`: {problem}", a.variant));
            let lane = stage
                .variants
                .iter()
                .position(|v| v.name == a.variant)
                .ok_or_else(|| bad("is not a variant of the stage".to_owned()))?;
            if sp.assignments[..i].iter().any(|o| o.variant == a.variant) {
                return Err(bad("is assigned twice".to_owned()));
            }
            if !(1..=MAX_BATCH).contains(&a.batch) {
                return Err(bad(format!(
                    "batch must be in 1..={MAX_BATCH}, got {}",
                    a.batch
                )));
            }
            if !(1..=MAX_CORES).contains(&a.cores) {
                return Err(bad(format!(
                    "cores must be in 1..={MAX_CORES}, got {}",
                    a.cores
                )));
            }
            if !(1..=MAX_REPLICAS).contains(&a.replicas) {
                return Err(bad(format!(
                    "replicas must be in 1..={MAX_REPLICAS}, got {}",
                    a.replicas
                )));
            }
            if !(a.share.is_finite() && a.share >= 0.0) {
                return Err(bad(format!(
                    "share must be a finite number ≥ 0, got {}",
                    a.share
                )));
            }
            stage_targets.push(Target {
                lane,
                batch: a.batch,
                cores: a.cores,
                replicas: a.replicas,
                share: a.share,
            });
        }
        let total: f64 = stage_targets.iter().map(|t| t.share).sum();
        if !(total > 0.0 && total.is_finite()) {
            return Err(bad("shares must sum to a positive number".to_owned()));
        }
        for t in &mut stage_targets {
            t.share /= total;
        }
        normalised.stages.push(StagePlan {
            stage: stage.name.clone(),
            assignments: sp
                .assignments
                .iter()
                .zip(&stage_targets)
                .map(|(a, t)| Assignment {
                    share: t.share,
                    ..a.clone()
                })
                .collect(),
        });
        targets.push(stage_targets);
    }
    Ok((targets, normalised))
}

impl HostSim {
    /// Validates, then reconciles; `instant` makes started replicas ready at once (t = 0).
    pub(super) fn apply_plan(
        &mut self,
        plan: &Plan,
        instant: bool,
    ) -> Result<ApplyReport, SimError> {
        let (targets, normalised) = validate_plan(&self.pipeline, plan)?;
        // Build every service table first, so that an error leaves the host untouched.
        let mut tables: Vec<Vec<(ServiceTable, Vec<Option<ServiceTable>>)>> =
            Vec::with_capacity(targets.len());
        for (s, stage_targets) in targets.iter().enumerate() {
            let mut stage_tables = Vec::with_capacity(stage_targets.len());
            for t in stage_targets {
                let variant = &self.pipeline.stages[s].variants[t.lane];
                let build = |cores| {
                    ServiceTable::build(
                        &variant.profile,
                        &variant.name,
                        t.batch,
                        cores,
                        self.settings.noise_scale,
                        self.settings.min_sigma,
                    )
                };
                let target_table = build(t.cores)?;
                let lane = &self.stages[s].lanes[t.lane];
                let mut others = Vec::with_capacity(lane.pools.len());
                for pool in &lane.pools {
                    others.push(if lane.batch != t.batch && pool.cores != t.cores {
                        Some(build(pool.cores)?)
                    } else {
                        None
                    });
                }
                stage_tables.push((target_table, others));
            }
            tables.push(stage_tables);
        }

        let mut report = ApplyReport {
            time_s: self.now,
            stages: Vec::with_capacity(targets.len()),
        };
        for ((s, stage_targets), stage_tables) in targets.into_iter().enumerate().zip(tables) {
            let mut change = StageChange {
                stage: self.stages[s].name.clone(),
                ..StageChange::default()
            };
            for l in 0..self.stages[s].lanes.len() {
                let lane = &mut self.stages[s].lanes[l];
                if lane.mode == LaneMode::Planned && stage_targets.iter().all(|t| t.lane != l) {
                    lane.mode = LaneMode::Outgoing;
                    lane.target_replicas = 0;
                    change.variants_removed.push(lane.variant.clone());
                    for pool in &mut lane.pools {
                        if !pool.superseded {
                            pool.superseded = true;
                            change.replicas_stopped += pool.remaining();
                        }
                    }
                }
            }
            for (t, (target_table, other_tables)) in stage_targets.iter().zip(stage_tables) {
                self.apply_target(s, t, target_table, other_tables, instant, &mut change);
            }
            self.settle_stage(s);
            for l in 0..self.stages[s].lanes.len() {
                if self.stages[s].lanes[l].mode != LaneMode::Off {
                    self.dispatch(s, l);
                }
            }
            report.stages.push(change);
        }
        self.target = normalised;
        Ok(report)
    }

    fn apply_target(
        &mut self,
        s: usize,
        t: &Target,
        target_table: ServiceTable,
        other_tables: Vec<Option<ServiceTable>>,
        instant: bool,
        change: &mut StageChange,
    ) {
        let lane = &mut self.stages[s].lanes[t.lane];
        let was_planned = lane.mode == LaneMode::Planned;
        if !was_planned {
            change.variants_added.push(lane.variant.clone());
        }
        if was_planned && (lane.share - t.share).abs() > 1e-9 {
            change.shares_changed = true;
        }
        if was_planned && lane.batch != t.batch {
            change.batch_changes += 1;
        }
        if was_planned && lane.target_cores != t.cores {
            change.cores_changes += 1;
        }
        lane.mode = LaneMode::Planned;
        lane.share = t.share;
        lane.target_cores = t.cores;
        lane.target_replicas = t.replicas;
        let batch_changed = lane.batch != t.batch;
        lane.batch = t.batch;
        for (pool, table) in lane.pools.iter_mut().zip(other_tables) {
            if let Some(table) = table {
                pool.service = table;
            }
        }
        let target_pool = match lane.target_pool() {
            Some(p) => {
                if batch_changed {
                    lane.pools[p].service = target_table;
                }
                p
            }
            None => {
                lane.pools.push(Pool::new(t.cores, target_table));
                lane.pools.len() - 1
            }
        };
        lane.pools[target_pool].superseded = false;
        change.replicas_started += self.grow_pool(s, t.lane, target_pool, t.replicas, instant);
        change.replicas_stopped += self.reduce_pool(s, t.lane, target_pool, t.replicas);
        for p in 0..self.stages[s].lanes[t.lane].pools.len() {
            if p == target_pool {
                continue;
            }
            // Superseded pools: starting replicas never served, cancel them; ready ones serve
            // until the target pool is ready.
            let pool = &self.stages[s].lanes[t.lane].pools[p];
            let keep = pool.ready - pool.retiring;
            let newly = !pool.superseded && pool.live() > 0;
            let cancelled = self.reduce_pool(s, t.lane, p, keep);
            let pool = &mut self.stages[s].lanes[t.lane].pools[p];
            if newly {
                pool.superseded = true;
                change.replicas_stopped += cancelled + pool.remaining();
            }
        }
        self.retire_superseded_if_covered(s, t.lane);
    }

    /// Brings a pool up to `target` replicas not told to leave: first takes back retirements,
    /// then starts new replicas. Returns how many started.
    fn grow_pool(&mut self, s: usize, l: usize, p: usize, target: u32, instant: bool) -> u32 {
        let now = self.now;
        let lane = &mut self.stages[s].lanes[l];
        let (load_time, gpu) = (lane.load_time_s, lane.gpu_mem_mb);
        let pool = &mut lane.pools[p];
        let remaining = pool.remaining();
        if remaining >= target {
            return 0;
        }
        let mut need = target - remaining;
        let taken_back = need.min(pool.retiring);
        pool.retiring -= taken_back;
        need -= taken_back;
        if need == 0 {
            return 0;
        }
        let cores = pool.cores;
        if instant || load_time <= 0.0 {
            pool.ready += need;
            let stage = &mut self.stages[s];
            stage.meter(now);
            stage.ready_replicas += need;
        } else {
            let ready_at = now + load_time;
            for _ in 0..need {
                pool.starting.push_back(ready_at);
            }
            self.schedule(
                ready_at,
                EventKind::ReplicaReady {
                    stage: s as u32,
                    lane: l as u32,
                    pool: p as u32,
                },
            );
        }
        self.cost.change(now, need, cores, gpu, true);
        need
    }

    /// Brings a pool down to `target` replicas not told to leave: cancels starting replicas
    /// (newest first), retires idle ones, and tells busy ones to leave once free.
    /// Returns how many it stopped or told to leave.
    fn reduce_pool(&mut self, s: usize, l: usize, p: usize, target: u32) -> u32 {
        let now = self.now;
        let lane = &mut self.stages[s].lanes[l];
        let gpu = lane.gpu_mem_mb;
        let pool = &mut lane.pools[p];
        let remaining = pool.remaining();
        if remaining <= target {
            return 0;
        }
        let excess = remaining - target;
        let cancelled = excess.min(pool.starting.len() as u32);
        for _ in 0..cancelled {
            pool.starting.pop_back();
        }
        let retired = (excess - cancelled).min(pool.idle());
        pool.ready -= retired;
        pool.retiring += excess - cancelled - retired;
        let cores = pool.cores;
        let stage = &mut self.stages[s];
        stage.meter(now);
        stage.ready_replicas -= retired;
        self.cost
            .change(now, cancelled + retired, cores, gpu, false);
        excess
    }

    /// Retires the replicas of superseded pools once the lane's target pool is fully ready.
    pub(super) fn retire_superseded_if_covered(&mut self, s: usize, l: usize) {
        let lane = &self.stages[s].lanes[l];
        if lane.mode != LaneMode::Planned {
            return;
        }
        let Some(target_pool) = lane.target_pool() else {
            return;
        };
        let pool = &lane.pools[target_pool];
        if pool.ready - pool.retiring.min(pool.ready) < lane.target_replicas {
            return;
        }
        for p in 0..self.stages[s].lanes[l].pools.len() {
            if p != target_pool && self.stages[s].lanes[l].pools[p].live() > 0 {
                self.reduce_pool(s, l, p, 0);
            }
        }
    }

    /// A draining lane whose queue is empty lets its replicas go; with none left it is off.
    pub(super) fn drain_if_done(&mut self, s: usize, l: usize) {
        if !self.stages[s].lanes[l].queue.is_empty() {
            return;
        }
        for p in 0..self.stages[s].lanes[l].pools.len() {
            if self.stages[s].lanes[l].pools[p].remaining() > 0 {
                self.reduce_pool(s, l, p, 0);
            }
        }
        let lane = &mut self.stages[s].lanes[l];
        if lane.live() == 0 {
            lane.mode = LaneMode::Off;
            lane.share = 0.0;
        }
    }

    /// After a replica left: a lane with nothing left may be off, and routes may change.
    pub(super) fn after_replicas_left(&mut self, s: usize, l: usize) {
        let lane = &self.stages[s].lanes[l];
        match lane.mode {
            LaneMode::Draining => self.drain_if_done(s, l),
            LaneMode::Planned | LaneMode::Outgoing if lane.ready() == 0 => self.settle_stage(s),
            _ => {}
        }
    }

    /// Moves outgoing lanes to draining once every planned variant has a ready replica, and
    /// recomputes the stage's routes.
    pub(super) fn settle_stage(&mut self, s: usize) {
        let pending = {
            let stage = &self.stages[s];
            stage
                .lanes
                .iter()
                .any(|l| l.mode == LaneMode::Planned && l.share > 0.0 && l.ready() == 0)
        };
        for l in 0..self.stages[s].lanes.len() {
            let lane = &self.stages[s].lanes[l];
            if lane.mode != LaneMode::Outgoing {
                continue;
            }
            if !pending {
                self.stages[s].lanes[l].mode = LaneMode::Draining;
                self.drain_if_done(s, l);
            } else if lane.ready() == 0 && lane.queue.is_empty() {
                // Never served and holds nothing: cancel its cold starts.
                for p in 0..self.stages[s].lanes[l].pools.len() {
                    self.reduce_pool(s, l, p, 0);
                }
                let lane = &mut self.stages[s].lanes[l];
                if lane.live() == 0 {
                    lane.mode = LaneMode::Off;
                    lane.share = 0.0;
                }
            }
        }
        self.compute_routes(s);
    }

    /// Routes: planned variants with a ready replica take their share; the share of planned
    /// variants still starting goes to the outgoing variants they replace (or, with none, to
    /// the ready planned ones); with nothing ready at all, requests queue at the planned ones.
    fn compute_routes(&mut self, s: usize) {
        let stage = &mut self.stages[s];
        let mut routes = std::mem::take(&mut stage.routes);
        routes.clear();
        let mut pending_share = 0.0;
        for (l, lane) in stage.lanes.iter().enumerate() {
            if lane.mode == LaneMode::Planned && lane.share > 0.0 {
                if lane.ready() > 0 {
                    routes.push(Route {
                        lane: l,
                        weight: lane.share,
                        credit: 0.0,
                    });
                } else {
                    pending_share += lane.share;
                }
            }
        }
        if pending_share > 0.0 {
            let outgoing: Vec<(usize, f64)> = stage
                .lanes
                .iter()
                .enumerate()
                .filter(|(_, lane)| lane.mode == LaneMode::Outgoing && lane.ready() > 0)
                .map(|(l, lane)| (l, lane.share))
                .collect();
            let outgoing_total: f64 = outgoing.iter().map(|o| o.1).sum();
            if !outgoing.is_empty() {
                for (l, share) in &outgoing {
                    let part = if outgoing_total > 0.0 {
                        share / outgoing_total
                    } else {
                        1.0 / outgoing.len() as f64
                    };
                    routes.push(Route {
                        lane: *l,
                        weight: pending_share * part,
                        credit: 0.0,
                    });
                }
            } else if routes.is_empty() {
                for (l, lane) in stage.lanes.iter().enumerate() {
                    if lane.mode == LaneMode::Planned && lane.share > 0.0 {
                        routes.push(Route {
                            lane: l,
                            weight: lane.share,
                            credit: 0.0,
                        });
                    }
                }
            }
        }
        routes.retain(|r| r.weight > 0.0);
        stage.route_total = routes.iter().map(|r| r.weight).sum();
        stage.routes = routes;
    }
}
