use std::collections::BTreeMap;

use claw_commands::{GpuInfo, GpuSample};
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;

/// What NVML says about this machine's GPUs at registration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuInventory {
    pub gpus: Vec<GpuInfo>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    /// `claw.gpu.mig` = `enabled` / `disabled`, when NVML can tell.
    pub labels: BTreeMap<String, String>,
}

/// The NVIDIA GPUs of this machine, through NVML loaded at run time
/// (`libnvidia-ml.so.1`). Without the driver there are simply no GPUs: the
/// agent never invents devices or readings.
pub struct Gpus {
    nvml: Option<Nvml>,
}

impl Gpus {
    /// Loads NVML. When that fails, logs one line and returns no GPUs.
    pub fn detect() -> Gpus {
        match Nvml::init() {
            Ok(nvml) => Gpus { nvml: Some(nvml) },
            Err(e) => {
                tracing::info!("no NVIDIA driver/NVML found ({e}); this node reports zero GPUs");
                Gpus { nvml: None }
            }
        }
    }

    /// A machine without GPUs (for tests and for `--runtime exec` hosts).
    pub fn none() -> Gpus {
        Gpus { nvml: None }
    }

    pub fn available(&self) -> bool {
        self.nvml.is_some()
    }

    /// Every GPU NVML lists. A device whose UUID cannot be read is skipped
    /// (it could not be assigned anyway) and logged.
    pub fn inventory(&self) -> GpuInventory {
        let Some(nvml) = &self.nvml else { return GpuInventory::default() };
        let mut inv = GpuInventory {
            driver_version: nvml.sys_driver_version().ok(),
            cuda_version: nvml.sys_cuda_driver_version().ok().map(|v| {
                format!("{}.{}", nvml_wrapper::cuda_driver_version_major(v), nvml_wrapper::cuda_driver_version_minor(v))
            }),
            ..Default::default()
        };
        let count = match nvml.device_count() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("NVML cannot count devices ({e}); reporting zero GPUs");
                return inv;
            }
        };
        let mut mig_seen = None;
        for index in 0..count {
            let dev = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("NVML device {index}: {e}; skipped");
                    continue;
                }
            };
            let uuid = match dev.uuid() {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!("NVML device {index} has no readable UUID ({e}); skipped");
                    continue;
                }
            };
            if let Ok(m) = dev.mig_mode() {
                mig_seen = Some(mig_seen.unwrap_or(false) || m.current == 1);
            }
            inv.gpus.push(GpuInfo {
                index,
                uuid,
                model: dev.name().unwrap_or_default(),
                memory_mb: dev.memory_info().map(|m| m.total / (1024 * 1024)).unwrap_or(0),
            });
        }
        if let Some(enabled) = mig_seen {
            inv.labels.insert("claw.gpu.mig".into(), if enabled { "enabled" } else { "disabled" }.into());
        }
        inv
    }

    /// One reading per GPU. A reading NVML cannot give is left out rather
    /// than made up: a GPU whose utilisation cannot be read has no sample.
    pub fn sample(&self) -> Vec<GpuSample> {
        let Some(nvml) = &self.nvml else { return Vec::new() };
        let count = nvml.device_count().unwrap_or(0);
        let mut out = Vec::new();
        for index in 0..count {
            let Ok(dev) = nvml.device_by_index(index) else { continue };
            let (Ok(uuid), Ok(util), Ok(mem)) = (dev.uuid(), dev.utilization_rates(), dev.memory_info()) else {
                continue;
            };
            out.push(GpuSample {
                gpu_uuid: uuid,
                utilization_pct: f64::from(util.gpu),
                memory_used_mb: mem.used / (1024 * 1024),
                temperature_c: dev.temperature(TemperatureSensor::Gpu).map(f64::from).unwrap_or(0.0),
                power_w: dev.power_usage().map(|mw| f64::from(mw) / 1000.0).unwrap_or(0.0),
            });
        }
        out
    }
}
