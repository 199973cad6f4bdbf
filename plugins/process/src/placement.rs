//! Where a worker runs: its port (round robin over the range), its CPUs (disjoint while the
//! host has enough) and its GPU.

use super::*;

impl ProcessBackend {
    /// A free port of the range, not held by any worker of ours (round robin).
    pub(crate) fn allocate_port(&mut self) -> Result<u16, ProcessError> {
        let (first, last) = (self.config.port_first, self.config.port_last);
        let span = u32::from(last - first) + 1;
        let mut port = self.port_cursor.clamp(first, last);
        for _ in 0..span {
            let held = self.workers.iter().any(|w| w.port == port);
            if !held && system::port_is_free(&self.config.host, port) {
                self.port_cursor = next_port(port, first, last);
                return Ok(port);
            }
            port = next_port(port, first, last);
        }
        Err(ProcessError::NoFreePort {
            first,
            last,
            host: self.config.host.clone(),
        })
    }

    /// The `cores` least-used CPUs (disjoint from other workers while the host has enough;
    /// shared, least-used first, when it does not). The flag says whether any is shared.
    pub(crate) fn choose_cpus(&self, cores: u32) -> (Vec<usize>, bool) {
        let mut usage: BTreeMap<usize, usize> = self.cpus.iter().map(|&c| (c, 0)).collect();
        for worker in &self.workers {
            for cpu in &worker.cpus {
                if let Some(n) = usage.get_mut(cpu) {
                    *n += 1;
                }
            }
        }
        let mut order: Vec<(usize, usize)> = usage.into_iter().map(|(c, n)| (n, c)).collect();
        order.sort_unstable();
        let take = (cores.max(1) as usize).min(order.len());
        let mut chosen: Vec<usize> = order[..take].iter().map(|&(_, c)| c).collect();
        chosen.sort_unstable();
        let shared = order[..take].iter().any(|&(n, _)| n > 0);
        (chosen, shared)
    }

    /// A GPU for a worker of `variant`, or why it gets none (`Err` only when required).
    pub(crate) fn choose_gpu(
        &mut self,
        variant: &VariantConfig,
    ) -> Result<Option<GpuInfo>, ProcessError> {
        if variant.gpu == GpuUse::None {
            return Ok(None);
        }
        let gpus = match self.gpus.list() {
            Ok(g) => g,
            Err(reason) => {
                return if variant.gpu == GpuUse::Required {
                    Err(reason)
                } else {
                    Ok(None)
                };
            }
        };
        let mut reserved: BTreeMap<u32, f64> = BTreeMap::new();
        for worker in &self.workers {
            if let (Some((index, _)), Phase::Starting { .. }) = (&worker.gpu, worker.phase) {
                *reserved.entry(*index).or_default() += worker.gpu_mem_mb;
            }
        }
        match gpu::choose(&gpus, &reserved, variant.gpu_mem_mb) {
            Some(g) => Ok(Some(g.clone())),
            None if variant.gpu == GpuUse::Required => Err(ProcessError::NoGpuMemory {
                need_mb: variant.gpu_mem_mb,
                free: gpus.iter().map(|g| (g.index, g.free_mb)).collect(),
            }),
            None => Ok(None),
        }
    }
}

pub(crate) fn next_port(port: u16, first: u16, last: u16) -> u16 {
    if port >= last { first } else { port + 1 }
}
