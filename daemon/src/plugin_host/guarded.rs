//! [`GuardedBackend`]: every backend call on the blocking pool with a time limit, backoff
//! after failures, panic containment and re-creation, hung-call tracking and counters.

use super::*;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::{
    ApplyReport, BackendError, BackendInstance, Description, HealthReport, PlanMessage,
    PluginObservation, STATUS_PANIC,
};

/// Time limits and backoff of a [`GuardedBackend`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPolicy {
    /// Limit of one call.
    pub timeout: Duration,
    /// Backoff after the first failure; doubled after each further one.
    pub backoff_initial: Duration,
    /// Upper bound of the backoff.
    pub backoff_max: Duration,
}

impl Default for CallPolicy {
    fn default() -> CallPolicy {
        CallPolicy {
            timeout: DEFAULT_CALL_TIMEOUT,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Why and since when a backend is degraded.
#[derive(Debug, Clone, PartialEq)]
pub struct Degraded {
    pub since: Instant,
    pub last_error: String,
    /// Calls are refused until then.
    pub retry_at: Instant,
}

/// Counters and state of a guarded backend (exported as metrics by the service).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardStats {
    pub calls: u64,
    /// Calls that returned an error status (panics and timeouts not included).
    pub errors: u64,
    pub panics: u64,
    pub timeouts: u64,
    /// Calls refused because of backoff or a hung call.
    pub refused: u64,
    /// Instances recreated after a panic.
    pub restarts: u64,
    pub consecutive_failures: u32,
    pub degraded: Option<Degraded>,
}

/// Makes a fresh instance (used after a panic).
pub type InstanceFactory =
    Arc<dyn Fn() -> Result<Box<dyn BackendInstance>, BackendError> + Send + Sync>;

/// What a blocking call produced.
pub(super) enum Answer {
    Observation(PluginObservation),
    Applied(ApplyReport),
    Health(HealthReport),
    Restarted,
}

pub(super) type Outcome = (
    Option<Box<dyn BackendInstance>>,
    std::thread::Result<Result<Answer, BackendError>>,
);

pub(super) struct HungCall {
    call: Call,
    since: Instant,
    job: tokio::task::JoinHandle<Outcome>,
}

/// A backend called through tokio's blocking pool with a time limit per call, turning
/// errors, panics and timeouts into [`HostError`]s naming the backend and the call, and
/// keeping it degraded with exponential backoff after a failure.
pub struct GuardedBackend {
    name: String,
    origin: BackendOrigin,
    policy: CallPolicy,
    description: Description,
    instance: Option<Box<dyn BackendInstance>>,
    hung: Option<HungCall>,
    factory: Option<InstanceFactory>,
    needs_restart: bool,
    stats: GuardStats,
    /// While degraded: when the next health probe may run (see [`GuardedBackend::call`]).
    next_probe: Option<Instant>,
    /// A health probe is running (its failure is logged quietly).
    probing: bool,
    /// When the last "backend degraded" warning was logged.
    warned_at: Option<Instant>,
}

impl fmt::Debug for GuardedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBackend")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("policy", &self.policy)
            .field("hung", &self.hung.as_ref().map(|h| h.call))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl GuardedBackend {
    /// Guards an instance; its name is the one it describes.
    pub fn new(
        instance: Box<dyn BackendInstance>,
        origin: BackendOrigin,
        policy: CallPolicy,
    ) -> GuardedBackend {
        let description = instance.describe();
        GuardedBackend {
            name: description.name.clone(),
            origin,
            policy,
            description,
            instance: Some(instance),
            hung: None,
            factory: None,
            needs_restart: false,
            stats: GuardStats::default(),
            next_probe: None,
            probing: false,
            warned_at: None,
        }
    }

    /// Guards an instance of a loaded plugin.
    pub fn from_plugin(instance: PluginInstance, policy: CallPolicy) -> GuardedBackend {
        let origin = instance.library.origin();
        GuardedBackend::new(Box::new(instance), origin, policy)
    }

    /// Creates an instance of `library` on the blocking pool within the time limit, with a
    /// factory that recreates it from the same config after a panic.
    ///
    /// # Errors
    ///
    /// The plugin's error, panic or timeout in `create`.
    pub async fn create_plugin(
        library: Arc<LoadedLibrary>,
        config_json: String,
        policy: CallPolicy,
    ) -> Result<GuardedBackend, HostError> {
        let origin = library.origin();
        let name = library.name.clone();
        let factory: InstanceFactory = {
            let library = library.clone();
            Arc::new(move || {
                library
                    .create_instance(&config_json)
                    .map(|i| Box::new(i) as Box<dyn BackendInstance>)
            })
        };
        let make = factory.clone();
        let mut job =
            tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(|| make())));
        let made = match tokio::time::timeout(policy.timeout, &mut job).await {
            Ok(Ok(made)) => made,
            Ok(Err(join)) => Err(Box::new(join.to_string()) as Box<dyn std::any::Any + Send>),
            Err(_) => {
                return Err(HostError::TimedOut {
                    backend: name,
                    origin,
                    call: Call::Create,
                    timeout: policy.timeout,
                });
            }
        };
        let instance = match made {
            Ok(Ok(instance)) => instance,
            Ok(Err(e)) => return Err(backend_error(&name, &origin, Call::Create, e)),
            Err(payload) => {
                return Err(HostError::Panicked {
                    backend: name,
                    origin,
                    call: Call::Create,
                    message: panic_message(payload.as_ref()),
                });
            }
        };
        let mut guarded = GuardedBackend::new(instance, origin, policy);
        guarded.factory = Some(factory);
        Ok(guarded)
    }

    /// Sets how to recreate the instance after a panic.
    pub fn with_factory(mut self, factory: InstanceFactory) -> GuardedBackend {
        self.factory = Some(factory);
        self
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its code comes from.
    pub fn origin(&self) -> &BackendOrigin {
        &self.origin
    }

    /// What it described at creation.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Counters and degraded state.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// Whether the last call failed (and calls are being backed off).
    pub fn is_degraded(&self) -> bool {
        self.stats.degraded.is_some()
    }

    /// Whether a timed-out call is still running.
    pub fn is_hung(&self) -> bool {
        self.hung.as_ref().is_some_and(|h| !h.job.is_finished())
    }

    /// What happened since the previous observe.
    ///
    /// # Errors
    ///
    /// See [`HostError`]: the backend's error, a panic, a timeout, or a refusal while hung
    /// or backing off.
    pub async fn observe(&mut self) -> Result<PluginObservation, HostError> {
        match self
            .call(Call::Observe, |b| b.observe().map(Answer::Observation))
            .await?
        {
            Answer::Observation(o) => Ok(o),
            _ => Err(self.mismatch(Call::Observe)),
        }
    }

    /// Reconciles the backend to `plan`.
    ///
    /// # Errors
    ///
    /// As for [`GuardedBackend::observe`].
    pub async fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, HostError> {
        let plan = plan.clone();
        match self
            .call(Call::Apply, move |b| b.apply(&plan).map(Answer::Applied))
            .await?
        {
            Answer::Applied(r) => Ok(r),
            _ => Err(self.mismatch(Call::Apply)),
        }
    }

    /// Whether the driven server is reachable and sane.
    ///
    /// # Errors
    ///
    /// As for [`GuardedBackend::observe`].
    pub async fn health(&mut self) -> Result<HealthReport, HostError> {
        match self
            .call(Call::Health, |b| b.health().map(Answer::Health))
            .await?
        {
            Answer::Health(h) => Ok(h),
            _ => Err(self.mismatch(Call::Health)),
        }
    }

    pub(super) fn mismatch(&self, call: Call) -> HostError {
        self.unusable(
            call,
            "internal error: the call answered another kind".into(),
        )
    }

    pub(super) fn unusable(&self, call: Call, reason: String) -> HostError {
        HostError::Unusable {
            backend: self.name.clone(),
            origin: self.origin.clone(),
            call,
            reason,
        }
    }

    /// Takes the instance back from a hung call that has since returned.
    async fn reclaim_hung(&mut self, call: Call) -> Result<(), HostError> {
        let Some(hung) = &self.hung else {
            return Ok(());
        };
        if !hung.job.is_finished() {
            self.stats.refused += 1;
            return Err(HostError::Hung {
                backend: self.name.clone(),
                origin: self.origin.clone(),
                call,
                hung_call: hung.call,
                hung_for: hung.since.elapsed(),
            });
        }
        let Some(hung) = self.hung.take() else {
            return Ok(());
        };
        match hung.job.await {
            Ok((instance, result)) => {
                tracing::info!(
                    backend = %self.name,
                    origin = %self.origin,
                    "backend returned from its {} after {} (the late answer is discarded)",
                    hung.call,
                    seconds(&hung.since.elapsed())
                );
                if matches!(
                    result,
                    Err(_)
                        | Ok(Err(BackendError {
                            code: STATUS_PANIC,
                            ..
                        }))
                ) {
                    self.needs_restart = true;
                }
                match instance {
                    Some(instance) => self.instance = Some(instance),
                    None => self.needs_restart = true,
                }
            }
            Err(join) => {
                self.needs_restart = true;
                tracing::warn!(backend = %self.name, "hung call ended abnormally: {join}");
            }
        }
        Ok(())
    }

    async fn call(
        &mut self,
        call: Call,
        body: impl FnOnce(&mut dyn BackendInstance) -> Result<Answer, BackendError> + Send + 'static,
    ) -> Result<Answer, HostError> {
        self.reclaim_hung(call).await?;
        if let Some(degraded) = &self.stats.degraded {
            let now = Instant::now();
            // While backing off, a cheap health call once per initial backoff (one period in
            // the service) finds a backend that is back, so control resumes at once instead
            // of after the whole backoff.
            let probe_due = now < degraded.retry_at
                && self.next_probe.is_none_or(|at| now >= at)
                && self.instance.is_some()
                && !self.needs_restart
                && call != Call::Health;
            if probe_due && self.probe_recovered().await {
                // Recovered: the call goes ahead below.
            } else if let Some(degraded) = &self.stats.degraded
                && now < degraded.retry_at
            {
                self.stats.refused += 1;
                return Err(HostError::Backoff {
                    backend: self.name.clone(),
                    origin: self.origin.clone(),
                    call,
                    retry_in: degraded.retry_at - now,
                    last_error: degraded.last_error.clone(),
                });
            }
        }
        if self.needs_restart || self.instance.is_none() {
            if let Some(factory) = self.factory.clone() {
                let old = self.instance.take();
                let result = self
                    .run(call, old, move |old| {
                        drop(old);
                        match factory() {
                            Ok(fresh) => (Some(fresh), Ok(Ok(Answer::Restarted))),
                            Err(e) => (None, Ok(Err(e))),
                        }
                    })
                    .await;
                match result {
                    Ok(_) => {
                        self.stats.restarts += 1;
                        self.needs_restart = false;
                        tracing::info!(backend = %self.name, origin = %self.origin, "backend instance recreated");
                    }
                    Err(e) => return Err(e),
                }
            } else if self.instance.is_none() {
                self.stats.refused += 1;
                return Err(self.unusable(
                    call,
                    "its instance was lost in an earlier failure and cannot be recreated".into(),
                ));
            }
        }
        let instance = self.instance.take();
        self.run(call, instance, move |instance| match instance {
            Some(mut instance) => {
                let result = catch_unwind(AssertUnwindSafe(|| body(instance.as_mut())));
                (Some(instance), result)
            }
            None => (None, Ok(Err(BackendError::failed("no instance")))),
        })
        .await
    }

    /// One health call while degraded: whether the backend answered healthy, in which case
    /// the backoff ends now and the call asked for goes ahead (its outcome decides whether
    /// the backend recovered, or backs off longer as before). A failed probe keeps the
    /// backoff as it was. Either way the next probe is one initial backoff later.
    async fn probe_recovered(&mut self) -> bool {
        let before = self.stats.degraded.clone();
        let consecutive = self.stats.consecutive_failures;
        let instance = self.instance.take();
        self.probing = true;
        let result = self
            .run(Call::Health, instance, move |instance| match instance {
                Some(mut instance) => {
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        instance.health().and_then(|report| {
                            if report.healthy {
                                Ok(Answer::Health(report))
                            } else {
                                Err(BackendError::unavailable(format!(
                                    "unhealthy: {}",
                                    report.detail
                                )))
                            }
                        })
                    }));
                    (Some(instance), result)
                }
                None => (None, Ok(Err(BackendError::failed("no instance")))),
            })
            .await;
        self.probing = false;
        let interval = self.policy.backoff_initial.max(Duration::from_millis(1));
        self.next_probe = Some(Instant::now() + interval);
        match result {
            Ok(_) => {
                if let Some(degraded) = &mut self.stats.degraded {
                    degraded.retry_at = Instant::now();
                }
                true
            }
            Err(_) => {
                if let (Some(mut kept), Some(now)) = (before, self.stats.degraded.as_ref()) {
                    kept.last_error = now.last_error.clone();
                    self.stats.degraded = Some(kept);
                }
                self.stats.consecutive_failures = consecutive;
                false
            }
        }
    }

    /// Runs `job` on the blocking pool within the time limit and books the outcome.
    async fn run(
        &mut self,
        call: Call,
        instance: Option<Box<dyn BackendInstance>>,
        job: impl FnOnce(Option<Box<dyn BackendInstance>>) -> Outcome + Send + 'static,
    ) -> Result<Answer, HostError> {
        self.stats.calls += 1;
        let mut handle = tokio::task::spawn_blocking(move || job(instance));
        let error = match tokio::time::timeout(self.policy.timeout, &mut handle).await {
            Ok(Ok((instance, result))) => {
                self.instance = instance;
                match result {
                    Ok(Ok(answer)) => {
                        // A recreated instance has not answered a call yet: no recovery.
                        if !matches!(answer, Answer::Restarted) {
                            self.succeeded();
                        }
                        return Ok(answer);
                    }
                    Ok(Err(e)) => {
                        let error = backend_error(&self.name, &self.origin, call, e);
                        if error.is_panic() {
                            self.needs_restart = true;
                        }
                        error
                    }
                    Err(payload) => {
                        self.needs_restart = true;
                        HostError::Panicked {
                            backend: self.name.clone(),
                            origin: self.origin.clone(),
                            call,
                            message: panic_message(payload.as_ref()),
                        }
                    }
                }
            }
            Ok(Err(join)) => {
                self.needs_restart = true;
                self.unusable(call, format!("the blocking call ended abnormally: {join}"))
            }
            Err(_) => {
                self.hung = Some(HungCall {
                    call,
                    since: Instant::now()
                        .checked_sub(self.policy.timeout)
                        .unwrap_or_else(Instant::now),
                    job: handle,
                });
                HostError::TimedOut {
                    backend: self.name.clone(),
                    origin: self.origin.clone(),
                    call,
                    timeout: self.policy.timeout,
                }
            }
        };
        self.failed(&error);
        Err(error)
    }

    pub(super) fn succeeded(&mut self) {
        if self.probing {
            // A healthy probe only lets the next call try; that call decides.
            return;
        }
        self.next_probe = None;
        if let Some(degraded) = self.stats.degraded.take() {
            tracing::info!(
                backend = %self.name,
                origin = %self.origin,
                "backend recovered after {} degraded",
                seconds(&degraded.since.elapsed())
            );
        }
        self.stats.consecutive_failures = 0;
    }

    pub(super) fn failed(&mut self, error: &HostError) {
        match error {
            HostError::Panicked { .. } => self.stats.panics += 1,
            HostError::TimedOut { .. } => self.stats.timeouts += 1,
            _ => self.stats.errors += 1,
        }
        self.stats.consecutive_failures = self.stats.consecutive_failures.saturating_add(1);
        let backoff = infadapt_plugin_support::exponential_backoff(
            self.policy.backoff_initial,
            self.policy.backoff_max,
            self.stats.consecutive_failures,
        );
        let now = Instant::now();
        let since = self.stats.degraded.as_ref().map_or(now, |d| d.since);
        // The same failure again is logged quietly: one warning when a backend degrades, and
        // while it stays degraded one when its error changes, at most every
        // `REWARN_INTERVAL` (a backend whose answers change each time, as garbage does,
        // would otherwise warn at every attempt).
        let repeated = self.stats.degraded.as_ref().is_some_and(|d| {
            d.last_error == error.to_string()
                || self
                    .warned_at
                    .is_some_and(|at| now.duration_since(at) < REWARN_INTERVAL)
        });
        self.stats.degraded = Some(Degraded {
            since,
            last_error: error.to_string(),
            retry_at: now + backoff,
        });
        if self.probing {
            tracing::debug!(backend = %self.name, "health probe while degraded failed: {error}");
            return;
        }
        self.next_probe = Some(now + self.policy.backoff_initial.max(Duration::from_millis(1)));
        if repeated {
            tracing::debug!(
                backend = %self.name,
                retry_in_s = backoff.as_secs_f64(),
                "backend still degraded: {error}"
            );
            return;
        }
        self.warned_at = Some(now);
        tracing::warn!(
            backend = %self.name,
            origin = %self.origin,
            retry_in_s = backoff.as_secs_f64(),
            "backend degraded: {error}"
        );
    }
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
