//! The simulated host's state: requests, replica pools, per-variant lanes and stages.

use std::collections::VecDeque;

use crate::LaneMode;
use crate::service::ServiceTable;

/// One request while it waits in a queue or rides in a batch (no heap allocation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    /// When it entered the system (stage 0), seconds.
    pub born: f64,
    /// When it entered its current stage's queue, seconds.
    pub enqueued: f64,
    /// Accuracy composed over the stages that served it so far.
    pub accuracy: f64,
}

/// Replicas of one variant with one core count.
#[derive(Debug)]
pub(crate) struct Pool {
    pub cores: u32,
    /// Ready times of replicas still starting, ascending.
    pub starting: VecDeque<f64>,
    /// Ready replicas, busy ones included.
    pub ready: u32,
    /// Replicas that cannot take a batch now.
    pub busy: u32,
    /// Busy replicas that leave as soon as they are free.
    pub retiring: u32,
    /// Set once an apply decided this pool's replicas go (so they are reported once).
    pub superseded: bool,
    pub service: ServiceTable,
}

impl Pool {
    pub fn new(cores: u32, service: ServiceTable) -> Pool {
        Pool {
            cores,
            starting: VecDeque::new(),
            ready: 0,
            busy: 0,
            retiring: 0,
            superseded: false,
            service,
        }
    }

    pub fn idle(&self) -> u32 {
        self.ready - self.busy
    }

    /// Replicas that exist (starting or ready), and so cost.
    pub fn live(&self) -> u32 {
        self.starting.len() as u32 + self.ready
    }

    /// Live replicas not already told to leave.
    pub fn remaining(&self) -> u32 {
        self.live() - self.retiring
    }
}

/// One variant of a stage: its batching queue and its replica pools (one per core count).
#[derive(Debug)]
pub(crate) struct Lane {
    pub variant: String,
    pub accuracy: f64,
    pub load_time_s: f64,
    pub gpu_mem_mb: f64,
    pub mode: LaneMode,
    /// Planned share of the stage's load (kept while outgoing, to split pending traffic).
    pub share: f64,
    pub batch: u32,
    pub target_cores: u32,
    pub target_replicas: u32,
    pub pools: Vec<Pool>,
    pub queue: VecDeque<Request>,
    pub timer_pending: bool,
}

impl Lane {
    pub fn ready(&self) -> u32 {
        self.pools.iter().map(|p| p.ready).sum()
    }

    pub fn live(&self) -> u32 {
        self.pools.iter().map(Pool::live).sum()
    }

    pub fn target_pool(&self) -> Option<usize> {
        self.pools.iter().position(|p| p.cores == self.target_cores)
    }
}

/// A routing target of a stage with its smooth weighted round-robin credit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub lane: usize,
    pub weight: f64,
    pub credit: f64,
}

/// One stage of the pipeline.
#[derive(Debug)]
pub(crate) struct StageState {
    pub name: String,
    /// One lane per variant of the stage, in the pipeline's order.
    pub lanes: Vec<Lane>,
    pub routes: Vec<Route>,
    pub route_total: f64,
    /// Requests queued over all lanes.
    pub queued: usize,
    pub ready_replicas: u32,
    pub busy_replicas: u32,
    meter_at: f64,
    /// Busy and ready replica-seconds since the last observation.
    pub busy_s: f64,
    pub ready_s: f64,
}

impl StageState {
    pub fn new(name: String, lanes: Vec<Lane>) -> StageState {
        StageState {
            name,
            lanes,
            routes: Vec::new(),
            route_total: 0.0,
            queued: 0,
            ready_replicas: 0,
            busy_replicas: 0,
            meter_at: 0.0,
            busy_s: 0.0,
            ready_s: 0.0,
        }
    }

    /// Integrates busy and ready replica-seconds up to `now`.
    #[inline]
    pub fn meter(&mut self, now: f64) {
        let dt = now - self.meter_at;
        if dt > 0.0 {
            self.busy_s += f64::from(self.busy_replicas) * dt;
            self.ready_s += f64::from(self.ready_replicas) * dt;
            self.meter_at = now;
        }
    }

    /// The lane the next request goes to (smooth weighted round-robin), `None` if no route.
    #[inline]
    pub fn route(&mut self) -> Option<usize> {
        match self.routes.len() {
            0 => None,
            1 => Some(self.routes[0].lane),
            _ => {
                let (mut best, mut best_credit) = (0, f64::NEG_INFINITY);
                for (i, r) in self.routes.iter_mut().enumerate() {
                    r.credit += r.weight;
                    if r.credit > best_credit {
                        (best, best_credit) = (i, r.credit);
                    }
                }
                self.routes[best].credit -= self.route_total;
                Some(self.routes[best].lane)
            }
        }
    }
}
