//! GPU discovery through NVML (the driver's library, loaded at run time, so the plugin
//! builds and runs without one) and the choice of a GPU by free memory.

use std::collections::BTreeMap;

use nvml_wrapper::Nvml;

/// One GPU as NVML reports it now.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    /// NVML index (the `{gpu}` placeholder).
    pub index: u32,
    /// `GPU-…` UUID, written into `CUDA_VISIBLE_DEVICES` (independent of CUDA's ordering).
    pub uuid: String,
    pub name: String,
    pub total_mb: f64,
    pub free_mb: f64,
}

/// The GPUs of the host, or why there are none to use.
pub struct Gpus {
    nvml: Result<Nvml, String>,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus")
            .field("available", &self.nvml.is_ok())
            .finish()
    }
}

impl Gpus {
    /// Loads NVML; without an NVIDIA driver the GPUs are unavailable, with the reason.
    pub fn probe() -> Gpus {
        let nvml = Nvml::init().map_err(|e| {
            format!("GPU placement unavailable: NVML cannot be initialised ({e}); workers run without a GPU")
        });
        Gpus { nvml }
    }

    /// A stand-in without GPUs, saying why (also used when no variant wants one).
    pub fn unavailable(reason: impl Into<String>) -> Gpus {
        Gpus {
            nvml: Err(reason.into()),
        }
    }

    /// Why GPUs cannot be used, when they cannot.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.nvml.as_ref().err().map(String::as_str)
    }

    /// The GPUs with their memory now; an NVML error comes back as text.
    pub fn list(&self) -> Result<Vec<GpuInfo>, String> {
        let nvml = self.nvml.as_ref().map_err(Clone::clone)?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        let mut gpus = Vec::new();
        for index in 0..count {
            let device = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML device {index}: {e}"))?;
            let memory = device
                .memory_info()
                .map_err(|e| format!("NVML memory of device {index}: {e}"))?;
            gpus.push(GpuInfo {
                index,
                uuid: device
                    .uuid()
                    .map_err(|e| format!("NVML uuid of device {index}: {e}"))?,
                name: device.name().unwrap_or_else(|_| "unknown".into()),
                total_mb: memory.total as f64 / (1024.0 * 1024.0),
                free_mb: memory.free as f64 / (1024.0 * 1024.0),
            });
        }
        Ok(gpus)
    }
}

/// The GPU with the most free memory once `reserved_mb` (memory promised to workers that
/// may not have allocated it yet, by GPU index) is taken off, if it leaves `need_mb`.
pub fn choose<'a>(
    gpus: &'a [GpuInfo],
    reserved_mb: &BTreeMap<u32, f64>,
    need_mb: f64,
) -> Option<&'a GpuInfo> {
    let left = |g: &GpuInfo| g.free_mb - reserved_mb.get(&g.index).copied().unwrap_or(0.0);
    gpus.iter()
        .filter(|g| left(g) >= need_mb)
        .max_by(|a, b| left(a).total_cmp(&left(b)).then(b.index.cmp(&a.index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, free_mb: f64) -> GpuInfo {
        GpuInfo {
            index,
            uuid: format!("GPU-{index}"),
            name: "test".into(),
            total_mb: 80_000.0,
            free_mb,
        }
    }

    #[test]
    fn the_gpu_with_most_memory_left_after_reservations_is_chosen() {
        let gpus = vec![gpu(0, 10_000.0), gpu(1, 12_000.0)];
        let mut reserved = BTreeMap::new();
        assert_eq!(choose(&gpus, &reserved, 1_000.0).unwrap().index, 1);
        reserved.insert(1, 5_000.0);
        assert_eq!(choose(&gpus, &reserved, 1_000.0).unwrap().index, 0);
        assert!(choose(&gpus, &reserved, 11_000.0).is_none());
        // Ties go to the lower index.
        let even = vec![gpu(0, 5_000.0), gpu(1, 5_000.0)];
        assert_eq!(choose(&even, &BTreeMap::new(), 0.0).unwrap().index, 0);
    }

    #[test]
    fn an_unavailable_inventory_says_why() {
        let gpus = Gpus::unavailable("no driver");
        assert_eq!(gpus.unavailable_reason(), Some("no driver"));
        assert_eq!(gpus.list().unwrap_err(), "no driver");
    }
}
