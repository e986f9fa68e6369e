use std::collections::BTreeMap;

use std::sync::Mutex;

use claw_commands::{GpuInfo, GpuSample};
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{EventSet, Nvml};

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
    /// Loaded once and kept for the life of the process (the event set
    /// borrows it).
    nvml: Option<&'static Nvml>,
    /// XID error events of every GPU, drained at each sample.
    xid_events: Option<Mutex<EventSet<'static>>>,
}

impl Gpus {
    /// Loads NVML. When that fails, logs one line and returns no GPUs.
    pub fn detect() -> Gpus {
        match Nvml::init() {
            Ok(nvml) => {
                let nvml: &'static Nvml = Box::leak(Box::new(nvml));
                Gpus { nvml: Some(nvml), xid_events: xid_event_set(nvml).map(Mutex::new) }
            }
            Err(e) => {
                tracing::info!("no NVIDIA driver/NVML found ({e}); this node reports zero GPUs");
                Gpus::none()
            }
        }
    }

    /// A machine without GPUs (for tests and for `--runtime exec` hosts).
    pub fn none() -> Gpus {
        Gpus { nvml: None, xid_events: None }
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
        let Some(nvml) = self.nvml else { return Vec::new() };
        let count = nvml.device_count().unwrap_or(0);
        let mut xids = self.drain_xid_events();
        let mut out = Vec::new();
        for index in 0..count {
            let Ok(dev) = nvml.device_by_index(index) else { continue };
            let (Ok(uuid), Ok(util), Ok(mem)) = (dev.uuid(), dev.utilization_rates(), dev.memory_info()) else {
                continue;
            };
            out.push(GpuSample {
                utilization_pct: f64::from(util.gpu),
                memory_used_mb: mem.used / (1024 * 1024),
                temperature_c: dev.temperature(TemperatureSensor::Gpu).map(f64::from).unwrap_or(0.0),
                power_w: dev.power_usage().map(|mw| f64::from(mw) / 1000.0).unwrap_or(0.0),
                sm_clock_mhz: dev.clock_info(Clock::SM).unwrap_or(0),
                // Without ECC (consumer boards) NVML answers NotSupported: no errors to count.
                ecc_corrected: dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile).unwrap_or(0),
                ecc_uncorrected: dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).unwrap_or(0),
                throttle_reasons: dev.current_throttle_reasons().map(throttle_names).unwrap_or_default(),
                xid_errors: xids.remove(&uuid).unwrap_or_default(),
                gpu_uuid: uuid,
            });
        }
        out
    }

    /// XID errors raised since the last call, by GPU uuid.
    fn drain_xid_events(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let Some(set) = &self.xid_events else { return out };
        let Ok(set) = set.lock() else { return out };
        // Bounded, so a storm of events cannot stall the metrics loop.
        for _ in 0..256 {
            match set.wait(0) {
                Ok(ev) => {
                    let code = match ev.event_data {
                        Some(XidError::Value(v)) => v,
                        _ => continue,
                    };
                    if let Ok(uuid) = ev.device.uuid() {
                        out.entry(uuid).or_default().push(code);
                    }
                }
                Err(NvmlError::Timeout) => break,
                Err(e) => {
                    tracing::debug!("reading NVML events: {e}");
                    break;
                }
            }
        }
        out
    }
}

/// One event set with every GPU registered for critical XID errors; `None`
/// (logged) where the driver does not support events.
fn xid_event_set(nvml: &'static Nvml) -> Option<EventSet<'static>> {
    let mut set = match nvml.create_event_set() {
        Ok(s) => s,
        Err(e) => {
            tracing::info!("NVML events unavailable ({e}); XID errors will not be reported");
            return None;
        }
    };
    for index in 0..nvml.device_count().unwrap_or(0) {
        let Ok(dev) = nvml.device_by_index(index) else { continue };
        set = match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!("GPU {index} cannot report XID events ({e}); XID errors will not be reported");
                return None;
            }
        };
    }
    Some(set)
}

/// NVML's throttle reasons in snake case; idle is not trouble and not listed.
pub fn throttle_names(r: ThrottleReasons) -> Vec<String> {
    let names = [
        (ThrottleReasons::APPLICATIONS_CLOCKS_SETTING, "applications_clocks_setting"),
        (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
        (ThrottleReasons::SYNC_BOOST, "sync_boost"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
        (ThrottleReasons::DISPLAY_CLOCK_SETTING, "display_clock_setting"),
    ];
    names.iter().filter(|(flag, _)| r.contains(*flag)).map(|(_, n)| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thermal_throttling_is_named_as_the_incident_detector_expects() {
        let names = throttle_names(ThrottleReasons::HW_THERMAL_SLOWDOWN | ThrottleReasons::GPU_IDLE);
        assert_eq!(names, ["hw_thermal_slowdown"]);
        for n in claw_commands::THERMAL_THROTTLE_REASONS {
            assert!(
                throttle_names(ThrottleReasons::all()).iter().any(|x| x == n),
                "{n} is never produced by the agent"
            );
        }
    }
}
