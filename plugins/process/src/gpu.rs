//! GPU discovery through NVML (the driver's library, loaded at run time, so the plugin
//! builds and runs without one) and the choice of a GPU by free memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use crate::error::ProcessError;

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
    inventory: Inventory,
}

/// What [`Gpus`] holds: NVML, or why it is not there.
enum Inventory {
    /// Boxed: the library handle is large.
    Nvml(Box<Nvml>),
    /// NVML failed to load; kept shared, as every placement repeats the reason.
    NoNvml(Arc<NvmlError>),
    /// No variant wants a GPU, so NVML was not loaded.
    NotWanted,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus")
            .field("available", &matches!(self.inventory, Inventory::Nvml(_)))
            .finish()
    }
}

impl Gpus {
    /// Loads NVML; without an NVIDIA driver the GPUs are unavailable, with the reason.
    pub fn probe() -> Gpus {
        let inventory = match Nvml::init() {
            Ok(nvml) => Inventory::Nvml(Box::new(nvml)),
            Err(error) => Inventory::NoNvml(Arc::new(error)),
        };
        Gpus { inventory }
    }

    /// A stand-in without GPUs for a configuration where no variant wants one.
    pub fn not_wanted() -> Gpus {
        Gpus {
            inventory: Inventory::NotWanted,
        }
    }

    /// Why GPUs cannot be used, when they cannot.
    pub fn unavailable_reason(&self) -> Option<ProcessError> {
        match &self.inventory {
            Inventory::Nvml(_) => None,
            Inventory::NoNvml(error) => Some(ProcessError::NvmlInit(Arc::clone(error))),
            Inventory::NotWanted => Some(ProcessError::NoGpuWanted),
        }
    }

    /// The GPUs with their memory now.
    pub fn list(&self) -> Result<Vec<GpuInfo>, ProcessError> {
        let nvml = match &self.inventory {
            Inventory::Nvml(nvml) => nvml,
            Inventory::NoNvml(error) => return Err(ProcessError::NvmlInit(Arc::clone(error))),
            Inventory::NotWanted => return Err(ProcessError::NoGpuWanted),
        };
        let query = |query: String| move |source| ProcessError::NvmlQuery { query, source };
        let count = nvml
            .device_count()
            .map_err(query("device count".to_owned()))?;
        let mut gpus = Vec::new();
        for index in 0..count {
            let device = nvml
                .device_by_index(index)
                .map_err(query(format!("device {index}")))?;
            let memory = device
                .memory_info()
                .map_err(query(format!("memory of device {index}")))?;
            gpus.push(GpuInfo {
                index,
                uuid: device
                    .uuid()
                    .map_err(query(format!("uuid of device {index}")))?,
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
        let gpus = Gpus::not_wanted();
        let reason = gpus.unavailable_reason().map(|r| r.to_string());
        assert_eq!(reason.as_deref(), Some("no variant asks for a GPU"));
        assert_eq!(
            gpus.list().unwrap_err().to_string(),
            "no variant asks for a GPU"
        );
    }
}
