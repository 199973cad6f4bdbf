//! [`HostSim`]: the discrete-event simulation of one pipeline on one host.
//!
//! Mechanism, per stage:
//! - each deployed variant (a *lane*) has a FIFO batching queue and replica *pools*, one per
//!   core count; arrivals to the stage are split between lanes by smooth weighted
//!   round-robin on their shares (deterministic, no random draw);
//! - a ready, idle replica takes a batch when `batch` requests are queued, or when the oldest
//!   queued request has waited `max_queue_delay_ms` (then it takes what is there);
//! - a batch of `k` on `c` cores completes after a lognormal latency (mean and p99 from the
//!   profile at `(k, c)`) and then moves each request to the next stage's queue; the replica
//!   is free again after the occupancy that reproduces the profiled throughput;
//! - a request still queued after `timeout_ms` in the system is dropped when it reaches the
//!   head of its queue (and at the end of every second); an arrival to a stage that already
//!   queues `max_queue_len` requests is dropped.
//!
//! Events (batch completions, replicas freed, replicas ready, batch-delay timers) live in a
//! binary heap ordered by time and then by insertion, so runs are deterministic per seed.
//! Arrivals of each second are generated up front (Poisson count, uniform order statistics)
//! into a reused buffer; queues hold plain `Copy` records; batch buffers are recycled.
//!
//! Common random numbers: arrivals and service times draw from two separate generators, each
//! seeded from the configured seed by [`stream_seed`]. The arrival stream is consumed only by
//! the arrivals, so the arrival times of every second depend on the seed and the sequence of
//! rates alone, never on the plans applied: every policy run with the same seed and workload
//! sees the very same requests, and comparisons between policies are paired.

mod reconcile;
pub use reconcile::{MAX_BATCH, MAX_CORES, MAX_REPLICAS};
mod state;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use infadapt_model::{Pipeline, Plan};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp1, Poisson};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::Settings;
use crate::report::VariantObservation;
use crate::{
    AccuracyComposition, ApplyReport, LaneMode, LatencyHistogram, PoolObservation, SimConfig,
    SimError, SimObservation, SimPulse, SimTotals, StageObservation,
};
use state::{Lane, Request, StageState};

/// Stream constant of the arrivals generator (any fixed value distinct from the others).
pub const ARRIVAL_STREAM: u64 = 0x6172_7269_7661_6c73; // "arrivals"
/// Stream constant of the service-time generator.
pub const SERVICE_STREAM: u64 = 0x7365_7276_6963_6573; // "services"

/// One SplitMix64 step (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): adds the golden-ratio increment and applies the finaliser,
/// a bijection of `u64` that spreads every input bit over every output bit.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed of the random stream `stream` of a run seeded with `seed`:
/// `splitmix64(seed ^ splitmix64(stream))`. Distinct streams of one seed, and one stream of
/// distinct seeds, get unrelated generators (the mixer is a bijection, so two streams of one
/// seed never share a seed).
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EventKind {
    BatchDone { buffer: u32 },
    ReplicaFree { stage: u32, lane: u32, pool: u32 },
    ReplicaReady { stage: u32, lane: u32, pool: u32 },
    BatchTimer { stage: u32, lane: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: f64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Event) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    /// Reversed, so that the max-heap pops the earliest event (ties: first scheduled).
    fn cmp(&self, other: &Event) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Requests of one batch while it is being served.
#[derive(Debug, Default)]
struct BatchBuffer {
    stage: u32,
    lane: u32,
    requests: Vec<Request>,
}

/// Counters of requests, kept for the whole run and for the observation window.
#[derive(Debug, Default)]
struct Tally {
    arrivals: u64,
    completed: u64,
    dropped_timeout: u64,
    dropped_overflow: u64,
    late: u64,
    accuracy_sum: f64,
    /// Composed accuracy summed over the requests that completed within the SLO.
    on_time_accuracy_sum: f64,
    latency: LatencyHistogram,
}

impl Tally {
    fn clear(&mut self) {
        let mut latency = std::mem::take(&mut self.latency);
        latency.clear();
        *self = Tally {
            latency,
            ..Tally::default()
        };
    }
}

/// Cost integration over replicas that exist.
#[derive(Debug, Default)]
struct CostMeter {
    live_cores: u64,
    live_gpu_mb: f64,
    at: f64,
    core_seconds: f64,
    gpu_mib_seconds: f64,
}

impl CostMeter {
    fn integrate(&mut self, now: f64) {
        let dt = now - self.at;
        if dt > 0.0 {
            self.core_seconds += self.live_cores as f64 * dt;
            self.gpu_mib_seconds += self.live_gpu_mb * dt;
            self.at = now;
        }
    }

    /// Adds (or, with `adding` false, removes) `count` replicas of `cores` cores and `gpu_mb` MiB.
    fn change(&mut self, now: f64, count: u32, cores: u32, gpu_mb: f64, adding: bool) {
        self.integrate(now);
        let cores = u64::from(count) * u64::from(cores);
        let gpu = f64::from(count) * gpu_mb;
        if adding {
            self.live_cores += cores;
            self.live_gpu_mb += gpu;
        } else {
            self.live_cores = self.live_cores.saturating_sub(cores);
            self.live_gpu_mb = (self.live_gpu_mb - gpu).max(0.0);
        }
    }
}

/// Discrete-event simulation of one pipeline served on one host.
#[derive(Debug)]
pub struct HostSim {
    pipeline: Pipeline,
    config: SimConfig,
    settings: Settings,
    stages: Vec<StageState>,
    now: f64,
    seconds: u64,
    events: BinaryHeap<Event>,
    seq: u64,
    buffers: Vec<BatchBuffer>,
    free_buffers: Vec<u32>,
    arrival_times: Vec<f64>,
    /// Draws the arrivals only (see [`stream_seed`]).
    arrival_rng: Xoshiro256PlusPlus,
    /// Draws the batch service times only.
    service_rng: Xoshiro256PlusPlus,
    in_batches: u64,
    total: Tally,
    window: Tally,
    window_start: f64,
    window_per_second: Vec<u32>,
    cost: CostMeter,
    target: Plan,
    invalid_rates: u64,
    clamped_rates: u64,
}

impl HostSim {
    /// A host serving `pipeline` with `initial` deployed and ready at t = 0.
    ///
    /// # Errors
    ///
    /// [`SimError::Pipeline`] for an invalid pipeline, [`SimError::Config`] for an
    /// out-of-range setting, [`SimError::Plan`] when the plan does not fit the pipeline.
    pub fn new(
        pipeline: &Pipeline,
        initial: &Plan,
        config: SimConfig,
    ) -> Result<HostSim, SimError> {
        pipeline.validate()?;
        config.validate()?;
        let settings = Settings::resolve(&config, pipeline.slo_ms);
        let stages = pipeline
            .stages
            .iter()
            .map(|stage| {
                let lanes = stage
                    .variants
                    .iter()
                    .map(|v| Lane {
                        variant: v.name.clone(),
                        accuracy: if v.accuracy.is_finite() {
                            v.accuracy
                        } else {
                            0.0
                        },
                        load_time_s: if v.load_time_s.is_finite() {
                            v.load_time_s.max(0.0)
                        } else {
                            0.0
                        },
                        // The simulator holds what the catalog says; unmeasured memory
                        // (which the planner keeps out wherever GPU memory counts) holds none.
                        gpu_mem_mb: match v.gpu_mem_mb {
                            Some(mb) if mb.is_finite() => mb.max(0.0),
                            _ => 0.0,
                        },
                        mode: LaneMode::Off,
                        share: 0.0,
                        batch: 1,
                        target_cores: 0,
                        target_replicas: 0,
                        pools: Vec::new(),
                        queue: Default::default(),
                        timer_pending: false,
                    })
                    .collect();
                StageState::new(stage.name.clone(), lanes)
            })
            .collect();
        let mut sim = HostSim {
            pipeline: pipeline.clone(),
            arrival_rng: Xoshiro256PlusPlus::seed_from_u64(stream_seed(
                config.seed,
                ARRIVAL_STREAM,
            )),
            service_rng: Xoshiro256PlusPlus::seed_from_u64(stream_seed(
                config.seed,
                SERVICE_STREAM,
            )),
            config,
            settings,
            stages,
            now: 0.0,
            seconds: 0,
            events: BinaryHeap::with_capacity(1024),
            seq: 0,
            buffers: Vec::new(),
            free_buffers: Vec::new(),
            arrival_times: Vec::with_capacity(1024),
            in_batches: 0,
            total: Tally::default(),
            window: Tally::default(),
            window_start: 0.0,
            window_per_second: Vec::new(),
            cost: CostMeter::default(),
            target: Plan::default(),
            invalid_rates: 0,
            clamped_rates: 0,
        };
        sim.apply_plan(initial, true)?;
        Ok(sim)
    }

    /// Reconciles the host towards `plan` at the current time, make-before-break.
    ///
    /// Added replicas start cold and serve after their variant's `load_time_s`; a change of
    /// batch size is immediate; a change of cores starts new replicas and retires the old ones
    /// once the new ones are all ready; removed replicas finish their batch first; a removed
    /// variant keeps its traffic until every planned variant of the stage has a ready replica,
    /// then serves its queue and leaves.
    ///
    /// # Errors
    ///
    /// [`SimError::Plan`] when the plan does not fit the pipeline; nothing changes then.
    pub fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SimError> {
        self.apply_plan(plan, false)
    }

    /// Simulates the next whole second with Poisson arrivals at `rate` requests per second.
    ///
    /// NaN or negative rates count as 0 (counted in [`SimTotals::invalid_rates`]); rates above
    /// `max_rate_rps`, infinity included, are clamped (counted in [`SimTotals::clamped_rates`]).
    pub fn step_second(&mut self, rate: f64) {
        let rate = self.sanitize_rate(rate);
        let start = self.seconds as f64;
        let end = start + 1.0;
        let mut times = std::mem::take(&mut self.arrival_times);
        self.draw_arrivals(rate, start, &mut times);
        for &t in &times {
            self.run_events(t, true);
            self.now = t;
            self.arrive(t);
        }
        self.window_per_second.push(times.len() as u32);
        self.arrival_times = times;
        self.run_events(end, false);
        self.now = end;
        self.seconds += 1;
        self.purge_expired();
    }

    /// Simulates one second per rate.
    pub fn step_seconds(&mut self, rates: &[f64]) {
        for &rate in rates {
            self.step_second(rate);
        }
    }

    /// Current virtual time, seconds.
    pub fn now_s(&self) -> f64 {
        self.now
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The pipeline being served.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The plan last applied.
    pub fn target_plan(&self) -> &Plan {
        &self.target
    }

    /// Requests queued or in a batch right now.
    pub fn in_flight(&self) -> u64 {
        self.in_batches + self.stages.iter().map(|s| s.queued as u64).sum::<u64>()
    }

    /// The last second's arrivals and the queues now, without closing the observation
    /// window (what a router in front of the host sees between observations).
    pub fn pulse(&self) -> SimPulse {
        SimPulse {
            time_s: self.now,
            arrivals_last_second: self.window_per_second.last().copied().unwrap_or(0),
            queue_len: self.stages.iter().map(|s| s.queued as u64).sum(),
            target: self.target.clone(),
        }
    }

    /// Profiled capacity of the replicas ready now (smallest stage), requests/s.
    pub fn ready_capacity_rps(&self) -> f64 {
        self.stages
            .iter()
            .map(|stage| observe_stage(stage, 0.0).capacity_rps)
            .fold(f64::INFINITY, f64::min)
            .min(f64::MAX)
    }

    /// What a backend would report for the window since the previous call.
    pub fn observe(&mut self) -> SimObservation {
        self.purge_expired();
        let now = self.now;
        let stages = self.stages.iter_mut().map(|stage| {
            stage.meter(now);
            let busy_fraction = if stage.ready_s > 0.0 {
                (stage.busy_s / stage.ready_s).min(1.0)
            } else {
                0.0
            };
            stage.busy_s = 0.0;
            stage.ready_s = 0.0;
            observe_stage(stage, busy_fraction)
        });
        let stages = stages.collect();
        let w = &self.window;
        let observation = SimObservation {
            time_s: now,
            window_s: now - self.window_start,
            arrivals: w.arrivals,
            arrivals_per_second: std::mem::take(&mut self.window_per_second),
            completed: w.completed,
            dropped: w.dropped_timeout + w.dropped_overflow,
            dropped_timeout: w.dropped_timeout,
            dropped_overflow: w.dropped_overflow,
            slo_misses: w.late,
            latency_p50_ms: w.latency.quantile_ms(0.5),
            latency_p95_ms: w.latency.quantile_ms(0.95),
            latency_p99_ms: w.latency.quantile_ms(0.99),
            mean_latency_ms: w.latency.mean_ms(),
            mean_accuracy: (w.completed > 0).then(|| w.accuracy_sum / w.completed as f64),
            on_time_accuracy_sum: w.on_time_accuracy_sum,
            stages,
            target: self.target.clone(),
        };
        self.window.clear();
        self.window_start = now;
        observation
    }

    /// Totals over the whole run so far.
    pub fn totals(&self) -> SimTotals {
        let t = &self.total;
        let dropped = t.dropped_timeout + t.dropped_overflow;
        let finished = t.completed + dropped;
        let dt = (self.now - self.cost.at).max(0.0);
        let core_seconds = self.cost.core_seconds + self.cost.live_cores as f64 * dt;
        let gpu_mib_seconds = self.cost.gpu_mib_seconds + self.cost.live_gpu_mb * dt;
        let quantile = |q| t.latency.quantile_ms(q).unwrap_or(0.0);
        SimTotals {
            seconds: self.seconds,
            requests: t.arrivals,
            completed: t.completed,
            dropped,
            dropped_timeout: t.dropped_timeout,
            dropped_overflow: t.dropped_overflow,
            in_flight: self.in_flight(),
            completed_late: t.late,
            slo_violations: dropped + t.late,
            slo_violation_rate: if finished > 0 {
                (dropped + t.late) as f64 / finished as f64
            } else {
                0.0
            },
            p50_latency_ms: quantile(0.5),
            p95_latency_ms: quantile(0.95),
            p99_latency_ms: quantile(0.99),
            mean_latency_ms: t.latency.mean_ms().unwrap_or(0.0),
            mean_accuracy: if t.completed > 0 {
                t.accuracy_sum / t.completed as f64
            } else {
                0.0
            },
            on_time_accuracy_sum: t.on_time_accuracy_sum,
            on_time_accuracy: if t.arrivals > 0 {
                t.on_time_accuracy_sum / t.arrivals as f64
            } else {
                0.0
            },
            core_seconds,
            gpu_mib_seconds,
            cost_core_hours: core_seconds / 3600.0,
            invalid_rates: self.invalid_rates,
            clamped_rates: self.clamped_rates,
        }
    }

    /// The latency histogram of every completed request so far.
    pub fn latency_histogram(&self) -> &LatencyHistogram {
        &self.total.latency
    }

    fn sanitize_rate(&mut self, rate: f64) -> f64 {
        if rate.is_nan() || rate < 0.0 {
            self.invalid_rates += 1;
            0.0
        } else if rate > self.settings.max_rate_rps {
            self.clamped_rates += 1;
            self.settings.max_rate_rps
        } else {
            rate
        }
    }

    /// Arrival times of one second: a Poisson count, then uniform order statistics drawn as
    /// normalised cumulative sums of exponentials (sorted without sorting).
    fn draw_arrivals(&mut self, rate: f64, start: f64, times: &mut Vec<f64>) {
        times.clear();
        if rate <= 0.0 {
            return;
        }
        let count = match Poisson::new(rate) {
            Ok(poisson) => {
                let n: f64 = poisson.sample(&mut self.arrival_rng);
                if n.is_finite() && n > 0.0 {
                    (n as u64).min(2 * self.settings.max_rate_rps as u64 + 64)
                } else {
                    0
                }
            }
            Err(_) => 0,
        };
        if count == 0 {
            return;
        }
        let mut sum = 0.0;
        for _ in 0..count {
            let e: f64 = self.arrival_rng.sample(Exp1);
            sum += e;
            times.push(sum);
        }
        let e: f64 = self.arrival_rng.sample(Exp1);
        let scale = 1.0 / (sum + e);
        for t in times.iter_mut() {
            *t = start + (*t * scale).min(1.0 - f64::EPSILON);
        }
    }

    fn initial_accuracy(&self) -> f64 {
        match self.settings.accuracy {
            AccuracyComposition::Sum => 0.0,
            AccuracyComposition::Product => 1.0,
        }
    }

    fn arrive(&mut self, t: f64) {
        self.total.arrivals += 1;
        self.window.arrivals += 1;
        let request = Request {
            born: t,
            enqueued: t,
            accuracy: self.initial_accuracy(),
        };
        if let Some(lane) = self.enqueue(0, request) {
            self.dispatch(0, lane);
        }
    }

    /// Runs every event due before `until` (at `until` too when `inclusive`).
    fn run_events(&mut self, until: f64, inclusive: bool) {
        while let Some(next) = self.events.peek() {
            let due = if inclusive {
                next.at <= until
            } else {
                next.at < until
            };
            if !due {
                break;
            }
            let Some(event) = self.events.pop() else {
                break;
            };
            self.now = event.at;
            match event.kind {
                EventKind::BatchDone { buffer } => self.batch_done(buffer as usize),
                EventKind::ReplicaFree { stage, lane, pool } => {
                    self.replica_free(stage as usize, lane as usize, pool as usize)
                }
                EventKind::ReplicaReady { stage, lane, pool } => {
                    self.replica_ready(stage as usize, lane as usize, pool as usize)
                }
                EventKind::BatchTimer { stage, lane } => {
                    self.stages[stage as usize].lanes[lane as usize].timer_pending = false;
                    self.dispatch(stage as usize, lane as usize);
                }
            }
        }
    }

    fn schedule(&mut self, at: f64, kind: EventKind) {
        self.seq += 1;
        self.events.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    /// Puts a request in the queue of the lane its stage routes it to, or drops it when the
    /// stage's queue is full. Returns the lane.
    fn enqueue(&mut self, stage_index: usize, request: Request) -> Option<usize> {
        let max = self.settings.max_queue_len;
        let stage = &mut self.stages[stage_index];
        let lane = if stage.queued >= max {
            None
        } else {
            stage.route()
        };
        match lane {
            Some(lane) => {
                stage.lanes[lane].queue.push_back(request);
                stage.queued += 1;
                Some(lane)
            }
            None => {
                self.total.dropped_overflow += 1;
                self.window.dropped_overflow += 1;
                None
            }
        }
    }

    fn drop_timeout(&mut self) {
        self.total.dropped_timeout += 1;
        self.window.dropped_timeout += 1;
    }

    /// Drops expired requests at the head of a lane's queue.
    fn purge_head(&mut self, stage: usize, lane: usize) {
        let cutoff = self.now - self.settings.timeout_s;
        loop {
            let queue = &mut self.stages[stage].lanes[lane].queue;
            match queue.front() {
                Some(r) if r.born < cutoff => {
                    queue.pop_front();
                    self.stages[stage].queued -= 1;
                    self.drop_timeout();
                }
                _ => break,
            }
        }
    }

    /// Drops expired heads of every queue and lets draining lanes with empty queues go.
    fn purge_expired(&mut self) {
        for s in 0..self.stages.len() {
            for l in 0..self.stages[s].lanes.len() {
                let lane = &self.stages[s].lanes[l];
                if !lane.queue.is_empty() {
                    self.purge_head(s, l);
                }
                let lane = &self.stages[s].lanes[l];
                if lane.mode == LaneMode::Draining && lane.queue.is_empty() {
                    self.drain_if_done(s, l);
                }
            }
        }
    }

    /// Starts batches on idle replicas of a lane while the batching rule allows.
    fn dispatch(&mut self, stage: usize, lane_index: usize) {
        loop {
            self.purge_head(stage, lane_index);
            let lane = &self.stages[stage].lanes[lane_index];
            let Some(front) = lane.queue.front() else {
                break;
            };
            let Some(pool) = lane.pools.iter().position(|p| p.ready > p.busy) else {
                break;
            };
            if lane.queue.len() < lane.batch as usize {
                let due = front.enqueued + self.settings.max_queue_delay_s;
                if self.now < due {
                    if !lane.timer_pending {
                        self.stages[stage].lanes[lane_index].timer_pending = true;
                        self.schedule(
                            due,
                            EventKind::BatchTimer {
                                stage: stage as u32,
                                lane: lane_index as u32,
                            },
                        );
                    }
                    break;
                }
            }
            self.start_batch(stage, lane_index, pool);
        }
        if self.stages[stage].lanes[lane_index].mode == LaneMode::Draining {
            self.drain_if_done(stage, lane_index);
        }
    }

    fn start_batch(&mut self, stage_index: usize, lane_index: usize, pool_index: usize) {
        let buffer_index = match self.free_buffers.pop() {
            Some(i) => i as usize,
            None => {
                self.buffers.push(BatchBuffer::default());
                self.buffers.len() - 1
            }
        };
        let mut requests = std::mem::take(&mut self.buffers[buffer_index].requests);
        requests.clear();
        let cutoff = self.now - self.settings.timeout_s;
        let mut expired = 0u64;
        {
            let stage = &mut self.stages[stage_index];
            let lane = &mut stage.lanes[lane_index];
            let batch = lane.batch as usize;
            while requests.len() < batch {
                let Some(r) = lane.queue.pop_front() else {
                    break;
                };
                stage.queued -= 1;
                if r.born < cutoff {
                    expired += 1;
                } else {
                    requests.push(r);
                }
            }
        }
        self.total.dropped_timeout += expired;
        self.window.dropped_timeout += expired;
        let k = requests.len();
        let buffer = &mut self.buffers[buffer_index];
        buffer.requests = requests;
        if k == 0 {
            self.free_buffers.push(buffer_index as u32);
            return;
        }
        buffer.stage = stage_index as u32;
        buffer.lane = lane_index as u32;
        self.in_batches += k as u64;
        let now = self.now;
        let stage = &mut self.stages[stage_index];
        stage.meter(now);
        stage.busy_replicas += 1;
        let pool = &mut stage.lanes[lane_index].pools[pool_index];
        pool.busy += 1;
        let (latency, occupancy) = pool.service.for_size(k).draw(&mut self.service_rng);
        self.schedule(
            now + latency,
            EventKind::BatchDone {
                buffer: buffer_index as u32,
            },
        );
        self.schedule(
            now + occupancy,
            EventKind::ReplicaFree {
                stage: stage_index as u32,
                lane: lane_index as u32,
                pool: pool_index as u32,
            },
        );
    }

    fn batch_done(&mut self, buffer_index: usize) {
        let stage = self.buffers[buffer_index].stage as usize;
        let lane = self.buffers[buffer_index].lane as usize;
        let mut requests = std::mem::take(&mut self.buffers[buffer_index].requests);
        self.in_batches -= requests.len() as u64;
        let accuracy = self.stages[stage].lanes[lane].accuracy;
        let compose = self.settings.accuracy;
        let now = self.now;
        let last = stage + 1 == self.stages.len();
        for r in &mut requests {
            r.accuracy = match compose {
                AccuracyComposition::Sum => r.accuracy + accuracy,
                AccuracyComposition::Product => r.accuracy * accuracy,
            };
        }
        if last {
            let slo = self.settings.slo_s;
            for r in &requests {
                let latency_s = now - r.born;
                let late = latency_s > slo;
                for tally in [&mut self.total, &mut self.window] {
                    tally.completed += 1;
                    tally.late += u64::from(late);
                    tally.accuracy_sum += r.accuracy;
                    if !late {
                        tally.on_time_accuracy_sum += r.accuracy;
                    }
                    tally.latency.record(latency_s * 1000.0);
                }
            }
        } else {
            for r in &requests {
                let next = Request {
                    enqueued: now,
                    ..*r
                };
                self.enqueue(stage + 1, next);
            }
            for i in 0..self.stages[stage + 1].routes.len() {
                let lane = self.stages[stage + 1].routes[i].lane;
                self.dispatch(stage + 1, lane);
            }
        }
        requests.clear();
        self.buffers[buffer_index].requests = requests;
        self.free_buffers.push(buffer_index as u32);
    }

    fn replica_free(&mut self, stage_index: usize, lane_index: usize, pool_index: usize) {
        let now = self.now;
        let stage = &mut self.stages[stage_index];
        stage.meter(now);
        stage.busy_replicas = stage.busy_replicas.saturating_sub(1);
        let lane = &mut stage.lanes[lane_index];
        let gpu = lane.gpu_mem_mb;
        let pool = &mut lane.pools[pool_index];
        pool.busy = pool.busy.saturating_sub(1);
        if pool.retiring > 0 {
            pool.retiring -= 1;
            pool.ready -= 1;
            let cores = pool.cores;
            stage.ready_replicas -= 1;
            self.cost.change(now, 1, cores, gpu, false);
            self.after_replicas_left(stage_index, lane_index);
        } else {
            self.dispatch(stage_index, lane_index);
        }
    }

    fn replica_ready(&mut self, stage_index: usize, lane_index: usize, pool_index: usize) {
        let now = self.now;
        let stage = &mut self.stages[stage_index];
        let pool = &mut stage.lanes[lane_index].pools[pool_index];
        let mut became_ready = 0;
        while pool.starting.front().is_some_and(|&t| t <= now) {
            pool.starting.pop_front();
            became_ready += 1;
        }
        if became_ready == 0 {
            return;
        }
        pool.ready += became_ready;
        stage.meter(now);
        stage.ready_replicas += became_ready;
        self.retire_superseded_if_covered(stage_index, lane_index);
        self.settle_stage(stage_index);
        self.dispatch(stage_index, lane_index);
    }
}

fn observe_stage(stage: &StageState, busy_fraction: f64) -> StageObservation {
    let mut capacity_rps = 0.0;
    let mut starting_replicas = 0;
    let mut variants = Vec::new();
    for (index, lane) in stage.lanes.iter().enumerate() {
        if lane.mode == LaneMode::Off && lane.live() == 0 && lane.queue.is_empty() {
            continue;
        }
        let routed = stage
            .routes
            .iter()
            .find(|r| r.lane == index)
            .map_or(0.0, |r| r.weight);
        let pools: Vec<PoolObservation> = lane
            .pools
            .iter()
            .filter(|p| p.live() > 0)
            .map(|p| PoolObservation {
                cores: p.cores,
                ready: p.ready,
                starting: p.starting.len() as u32,
                busy: p.busy,
                retiring: p.retiring,
            })
            .collect();
        for p in &lane.pools {
            starting_replicas += p.starting.len() as u32;
            if lane.mode != LaneMode::Draining {
                capacity_rps +=
                    f64::from(p.ready - p.retiring) * p.service.full_batch_throughput_rps;
            }
        }
        variants.push(VariantObservation {
            variant: lane.variant.clone(),
            mode: lane.mode,
            batch: lane.batch,
            routed_share: if stage.route_total > 0.0 {
                routed / stage.route_total
            } else {
                0.0
            },
            planned_share: if lane.mode == LaneMode::Planned {
                lane.share
            } else {
                0.0
            },
            queue_len: lane.queue.len(),
            pools,
        });
    }
    StageObservation {
        stage: stage.name.clone(),
        queue_len: stage.queued,
        busy_fraction,
        capacity_rps,
        ready_replicas: stage.ready_replicas,
        starting_replicas,
        variants,
    }
}
