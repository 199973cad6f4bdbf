//! GPU memory for `infadaptd profile`: the device memory in use, read through NVML (the
//! driver's library, loaded at run time, so the daemon builds and runs without one), and
//! the rule that turns readings into a variant's GPU memory per replica or "unmeasured".
//!
//! Method: the memory in use on all GPUs together is read once before the first
//! configuration is deployed (the baseline) and, for every configuration, after its warm-up
//! and after each offered rate; the configuration's figure is its highest reading minus the
//! baseline. A variant's GPU memory per replica is the largest of its configurations'
//! figures divided by their instance count (conservative: a larger batch needs more memory,
//! and memory shared by instances is counted for each). It is unmeasured when NVML cannot be
//! read, or when no configuration shows an increase (the backend runs on CPU, or another
//! process freed memory meanwhile). Caveat: device memory is host-wide, so other processes
//! allocating or freeing GPU memory during the run skew the figures.

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

/// Why GPU memory cannot be read; the recorder keeps the first such reason and the catalog
/// says "unmeasured" because of it.
#[derive(Debug, thiserror::Error)]
pub enum GpuMeterError {
    #[error("NVML cannot be initialised ({0})")]
    Init(NvmlError),
    /// An NVML query failed; `query` names it (`device count`, `memory of device 0`, ...).
    #[error("NVML {query}: {source}")]
    Query { query: String, source: NvmlError },
    #[error("NVML reports no GPU")]
    NoGpu,
    #[error("NVML reported {0} MiB in use")]
    NotFinite(f64),
}

/// Something that reads the GPU memory in use on the host, in MiB.
pub trait GpuMeter {
    /// Memory in use on all GPUs together, or why it cannot be read.
    fn used_mb(&mut self) -> Result<f64, GpuMeterError>;
}

/// Maps an NVML error of the query named `query` (`device count`, `device 0`).
fn query(query: String) -> impl FnOnce(NvmlError) -> GpuMeterError {
    move |source| GpuMeterError::Query { query, source }
}

/// The host's GPUs through NVML.
pub struct NvmlMeter {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlMeter").finish_non_exhaustive()
    }
}

impl NvmlMeter {
    /// Loads NVML; without an NVIDIA driver this fails with the reason.
    pub fn open() -> Result<NvmlMeter, GpuMeterError> {
        let nvml = Nvml::init().map_err(GpuMeterError::Init)?;
        let count = nvml
            .device_count()
            .map_err(query("device count".to_owned()))?;
        if count == 0 {
            return Err(GpuMeterError::NoGpu);
        }
        Ok(NvmlMeter { nvml })
    }
}

impl GpuMeter for NvmlMeter {
    fn used_mb(&mut self) -> Result<f64, GpuMeterError> {
        let count = self
            .nvml
            .device_count()
            .map_err(query("device count".to_owned()))?;
        let mut used = 0.0;
        for index in 0..count {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(query(format!("device {index}")))?;
            let memory = device
                .memory_info()
                .map_err(query(format!("memory of device {index}")))?;
            used += memory.used as f64 / (1024.0 * 1024.0);
        }
        Ok(used)
    }
}

/// Readings of one profiling run.
#[derive(Debug)]
pub struct GpuRecorder {
    meter: Option<Box<dyn GpuMeter>>,
    /// Why there are no readings, once there are none.
    problem: Option<GpuMeterError>,
    baseline_mb: Option<f64>,
}

impl GpuRecorder {
    /// A recorder over `meter`, or one that records nothing because of `why`.
    pub fn new(meter: Result<Box<dyn GpuMeter>, GpuMeterError>) -> GpuRecorder {
        match meter {
            Ok(meter) => GpuRecorder {
                meter: Some(meter),
                problem: None,
                baseline_mb: None,
            },
            Err(why) => GpuRecorder {
                meter: None,
                problem: Some(why),
                baseline_mb: None,
            },
        }
    }

    /// One reading; a failed one stops the recording (the figures would mix readings).
    pub fn read(&mut self) -> Option<f64> {
        let meter = self.meter.as_mut()?;
        match meter.used_mb() {
            Ok(mb) if mb.is_finite() => Some(mb),
            Ok(mb) => self.fail(GpuMeterError::NotFinite(mb)),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, why: GpuMeterError) -> Option<f64> {
        self.meter = None;
        self.problem = Some(why);
        None
    }

    /// Takes the baseline, before anything is deployed.
    pub fn take_baseline(&mut self) {
        self.baseline_mb = self.read();
    }

    /// Whether every reading so far succeeded (figures taken before a failed reading are
    /// dropped with the rest).
    pub fn recording(&self) -> bool {
        self.meter.is_some()
    }

    /// Memory held above the baseline given a configuration's highest reading; `None` when
    /// there is no reading or no increase (nothing attributable to the backend).
    pub fn held_mb(&self, peak_mb: Option<f64>) -> Option<f64> {
        self.meter.as_ref()?;
        Some(peak_mb? - self.baseline_mb?).filter(|mb| *mb > 0.0)
    }

    /// How the figures were obtained, or why there are none, for the report and catalog.
    pub fn method(&self) -> String {
        match (&self.problem, self.baseline_mb) {
            (Some(why), _) => format!(
                "unmeasured: {why}; the catalog says gpu_mem_mb = \"unmeasured\" (write 0 for a CPU-only variant)"
            ),
            (None, Some(base)) => format!(
                "NVML device memory in use on all GPUs, highest reading per configuration minus {base:.0} MiB in use before the first deploy; per replica: the largest figure / instances"
            ),
            (None, None) => "unmeasured: no baseline reading".to_owned(),
        }
    }
}

impl std::fmt::Debug for dyn GpuMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuMeter")
    }
}

/// A variant's GPU memory per replica from its configurations' `(instances, held MiB)`;
/// `None` (unmeasured) when a configuration has no figure or none shows an increase.
pub fn per_replica_mb(cells: &[(u32, Option<f64>)]) -> Option<f64> {
    let mut largest: Option<f64> = None;
    for &(instances, held) in cells {
        let per = held? / f64::from(instances.max(1));
        largest = Some(largest.map_or(per, |l: f64| l.max(per)));
    }
    largest
        .filter(|mb| mb.is_finite() && *mb > 0.0)
        .map(|mb| mb.ceil())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A meter that replays readings, then fails.
    struct Replay(Vec<f64>);

    impl GpuMeter for Replay {
        fn used_mb(&mut self) -> Result<f64, GpuMeterError> {
            if self.0.is_empty() {
                Err(GpuMeterError::NoGpu)
            } else {
                Ok(self.0.remove(0))
            }
        }
    }

    #[test]
    fn per_replica_memory_is_the_largest_share_of_a_configuration() {
        assert_eq!(
            per_replica_mb(&[(1, Some(900.0)), (2, Some(2000.5)), (1, Some(950.0))]),
            Some(1001.0)
        );
        // Any configuration without a figure, or no increase at all: unmeasured.
        assert_eq!(per_replica_mb(&[(1, Some(900.0)), (2, None)]), None);
        assert_eq!(per_replica_mb(&[(1, Some(0.0)), (2, Some(-3.0))]), None);
        assert_eq!(per_replica_mb(&[]), None);
    }

    #[test]
    fn readings_are_taken_against_the_baseline_until_one_fails() {
        let mut recorder = GpuRecorder::new(Ok(Box::new(Replay(vec![500.0, 1700.0]))));
        recorder.take_baseline();
        let peak = recorder.read();
        assert_eq!(recorder.held_mb(peak), Some(1200.0));
        assert_eq!(recorder.held_mb(Some(500.0)), None, "no increase");
        assert_eq!(
            recorder.held_mb(Some(450.0)),
            None,
            "memory freed meanwhile"
        );
        assert!(
            recorder.method().contains("minus 500 MiB"),
            "{}",
            recorder.method()
        );
        // A failed reading makes every figure unmeasured, saying why.
        assert!(recorder.recording());
        assert_eq!(recorder.read(), None);
        assert!(!recorder.recording());
        assert_eq!(recorder.held_mb(Some(1700.0)), None);
        assert!(
            recorder
                .method()
                .starts_with("unmeasured: NVML reports no GPU"),
            "{}",
            recorder.method()
        );
    }

    #[test]
    fn without_nvml_everything_is_unmeasured_with_the_reason() {
        let mut recorder = GpuRecorder::new(Err(GpuMeterError::Init(NvmlError::DriverNotLoaded)));
        recorder.take_baseline();
        assert_eq!(recorder.read(), None);
        assert_eq!(recorder.held_mb(Some(10.0)), None);
        assert!(
            recorder.method().contains("NVML cannot be initialised ("),
            "{}",
            recorder.method()
        );
        assert!(recorder.method().contains("\"unmeasured\""));
    }

    #[test]
    fn nvml_opens_or_says_why() {
        // Either way the result is usable: a meter whose readings are finite, or a reason.
        match NvmlMeter::open() {
            Ok(mut meter) => assert!(meter.used_mb().is_ok_and(f64::is_finite)),
            Err(why) => assert!(why.to_string().starts_with("NVML"), "{why}"),
        }
    }
}
