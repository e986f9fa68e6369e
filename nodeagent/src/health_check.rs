//! The GPU health check: a small f32 matrix multiply run on one device
//! through cubecl, checked against a CPU reference on the same inputs and
//! timed. It tells whether the device computes correctly and roughly how
//! fast, on CUDA where an NVIDIA driver answers and on wgpu (Vulkan, Metal)
//! everywhere else, including Mesa's lavapipe on machines without a GPU.
//!
//! It is synchronous and may take a second or more; call it from async code
//! through `spawn_blocking`. A device or driver that is missing is an error
//! value, never a panic and never made-up numbers: cubecl panics when it
//! cannot open a device, so every call into it is guarded.

mod kernel;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};

use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::wgpu::{init_setup, AutoGraphicsApi, GraphicsApi, RuntimeOptions, WgpuDevice, WgpuRuntime};
use cubecl::Runtime;
use serde::{Deserialize, Serialize};

use kernel::{run_matmul, MatmulRun};

/// The largest matrix side accepted. The CPU reference grows as n³ (4096
/// takes about a minute on one core), and four 4096² f32 buffers (64 MiB
/// each) stay within wgpu's default storage-buffer limit.
pub const MAX_MATRIX_SIZE: u32 = 4096;

/// Seeds of the two input matrices. Fixed so that every node multiplies the
/// same matrices and a result can be reproduced anywhere.
const SEED_A: u64 = 0x9E37_79B9_7F4A_7C15;
const SEED_B: u64 = 0xD1B5_4A32_D192_ED03;

/// How big and how often the health check multiplies, and how close to the
/// CPU reference the result must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckOptions {
    /// Side of the square matrices, 1 to [`MAX_MATRIX_SIZE`].
    pub matrix_size: u32,
    /// Timed runs after one untimed warm-up run (which compiles the kernel).
    pub iterations: u32,
    /// Allowed error relative to the size of the reference: the checksum may
    /// differ from the reference checksum by `tolerance` times the sum of
    /// the reference's absolute values, and each element from its reference
    /// by `tolerance` times the largest absolute reference element. Relative
    /// to magnitudes rather than to the values themselves because sums of
    /// random signed numbers can cancel to nearly zero.
    pub tolerance: f64,
}

impl Default for HealthCheckOptions {
    fn default() -> Self {
        HealthCheckOptions { matrix_size: 512, iterations: 3, tolerance: 1e-3 }
    }
}

/// Which cubecl runtime ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckRuntime {
    /// NVIDIA GPUs through the CUDA driver (kernels compiled with NVRTC).
    Cuda,
    /// Any adapter wgpu finds on the platform's graphics API: Vulkan on
    /// Linux (a GPU, or lavapipe on the CPU), Metal on macOS.
    Wgpu,
}

impl HealthCheckRuntime {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheckRuntime::Cuda => "cuda",
            HealthCheckRuntime::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for HealthCheckRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one health check on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckReport {
    pub runtime: HealthCheckRuntime,
    /// What the runtime says the device is: the wgpu adapter name, or
    /// `cuda:<index>` followed by the NVML model name where that name is
    /// certainly this device's.
    pub device: String,
    pub device_index: u32,
    pub matrix_size: u32,
    /// The checksum and every element are within tolerance of the CPU
    /// reference.
    pub passed: bool,
    /// 2·n³ floating-point operations over the best timed run.
    pub gflops: f64,
    /// Sum of the device's result matrix, added up on the host in f64.
    pub checksum: f64,
    /// Sum of the CPU reference result (f64 triple loop, same inputs).
    pub reference_checksum: f64,
    /// Largest absolute difference between a result element and its
    /// reference.
    pub max_abs_error: f64,
    /// Best timed run: launch until the device has finished.
    pub elapsed_ms: f64,
    /// One sentence for people, naming the failed check when it failed.
    pub detail: String,
}

/// Why no health check could be run. A result that is wrong is not an
/// error: it is a report with `passed: false`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HealthCheckError {
    #[error("invalid health-check options: {0}")]
    InvalidOptions(String),
    #[error("no wgpu adapter found on the {backend} backend: install a Vulkan driver (Debian: mesa-vulkan-drivers)")]
    NoWgpuAdapter { backend: String },
    #[error("wgpu adapter {index} not available: {reason}")]
    WgpuAdapterUnavailable { index: u32, reason: String },
    #[error("CUDA device {index} not available: {reason}")]
    CudaUnavailable { index: u32, reason: String },
    #[error("{runtime} health-check kernel failed on {device}: {reason}")]
    Kernel { runtime: HealthCheckRuntime, device: String, reason: String },
}

/// CUDA when an NVIDIA driver answers (pass the GPU count from NVML), else
/// wgpu.
pub fn pick_runtime(nvidia_gpus: usize) -> HealthCheckRuntime {
    if nvidia_gpus > 0 {
        HealthCheckRuntime::Cuda
    } else {
        HealthCheckRuntime::Wgpu
    }
}

/// Multiplies two fixed pseudo-random `matrix_size`² matrices on device
/// `device_index` of `runtime`, compares the product with a CPU reference
/// and times it. For CUDA the index is the CUDA device ordinal; for wgpu it
/// is the adapter's position in the list the platform's graphics API gives.
/// Blocking.
pub fn run_health_check(
    runtime: HealthCheckRuntime,
    device_index: u32,
    opts: &HealthCheckOptions,
) -> Result<HealthCheckReport, HealthCheckError> {
    validate(opts)?;
    let n = opts.matrix_size;
    let a = pseudo_random_matrix(n, SEED_A);
    let b = pseudo_random_matrix(n, SEED_B);

    let (device, run) = match runtime {
        HealthCheckRuntime::Wgpu => {
            let target = wgpu_target(device_index)?;
            let run = guarded(|| run_matmul(&WgpuRuntime::client(&target.device), &a, &b, n, opts.iterations));
            (target.name, run)
        }
        HealthCheckRuntime::Cuda => {
            let device = cuda_device(device_index)?;
            let run = guarded(|| run_matmul(&CudaRuntime::client(&device), &a, &b, n, opts.iterations));
            (cuda_device_name(device_index), run)
        }
    };
    let MatmulRun { result, timings } =
        run.and_then(|r| r).map_err(|reason| HealthCheckError::Kernel { runtime, device: device.clone(), reason })?;

    let reference = cpu_reference(&a, &b, n);
    let cmp = compare(n, &result, &reference, opts.tolerance);
    let best = timings.iter().copied().fold(f64::INFINITY, f64::min);
    let flops = 2.0 * f64::from(n).powi(3);
    Ok(HealthCheckReport {
        runtime,
        detail: format!("{n}x{n} f32 matmul on {device}: {}", cmp.verdict),
        device,
        device_index,
        matrix_size: n,
        passed: cmp.passed,
        // A clock that could not see the run at all must not yield infinity.
        gflops: flops / best.max(1e-9) / 1e9,
        checksum: cmp.checksum,
        reference_checksum: cmp.reference_checksum,
        max_abs_error: cmp.max_abs_error,
        elapsed_ms: best * 1e3,
    })
}

fn validate(opts: &HealthCheckOptions) -> Result<(), HealthCheckError> {
    let bad = |what: String| Err(HealthCheckError::InvalidOptions(what));
    if opts.matrix_size == 0 || opts.matrix_size > MAX_MATRIX_SIZE {
        return bad(format!("matrix_size {} is outside 1..={MAX_MATRIX_SIZE}", opts.matrix_size));
    }
    if opts.iterations == 0 {
        return bad("iterations must be at least 1".into());
    }
    if !(opts.tolerance.is_finite() && opts.tolerance > 0.0) {
        return bad(format!("tolerance {} must be a positive number", opts.tolerance));
    }
    Ok(())
}

/// A wgpu adapter cubecl has been set up on, with the name the adapter gives.
#[derive(Clone)]
struct WgpuTarget {
    device: WgpuDevice,
    name: String,
}

/// Adapters already set up, by index. cubecl keeps one server per device
/// for the life of the process and refuses to set one up twice, so the
/// name read during setup is kept here for later checks.
static WGPU_TARGETS: Mutex<BTreeMap<u32, WgpuTarget>> = Mutex::new(BTreeMap::new());

fn wgpu_target(index: u32) -> Result<WgpuTarget, HealthCheckError> {
    // Held through setup so that two concurrent first checks of one adapter
    // cannot both try to register it.
    let mut targets = WGPU_TARGETS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(target) = targets.get(&index) {
        return Ok(target.clone());
    }
    let unavailable = |reason: String| HealthCheckError::WgpuAdapterUnavailable { index, reason };

    let backend = AutoGraphicsApi::backend();
    let adapters = guarded(|| WgpuRuntime::enumerate_all_devices(&backend)).map_err(unavailable)?;
    if adapters.is_empty() {
        return Err(HealthCheckError::NoWgpuAdapter { backend: format!("{backend:?}") });
    }
    let Some(id) = adapters.get(index as usize) else {
        return Err(unavailable(format!("the {backend:?} backend lists {} adapter(s)", adapters.len())));
    };
    // cubecl addresses an adapter by its type and its rank among adapters
    // of that type, in the order the graphics API lists them.
    let rank = adapters[..index as usize].iter().filter(|other| other.type_id == id.type_id).count();
    let device = match (id.type_id, rank) {
        (0, _) => WgpuDevice::DiscreteGpu(rank),
        (1, _) => WgpuDevice::IntegratedGpu(rank),
        (2, _) => WgpuDevice::VirtualGpu(rank),
        (3, 0) => WgpuDevice::Cpu,
        _ => {
            return Err(unavailable(
                "cubecl can only address the first CPU adapter and no adapter of unknown type".into(),
            ))
        }
    };
    let setup = guarded(|| init_setup::<AutoGraphicsApi>(&device, RuntimeOptions::default())).map_err(unavailable)?;
    let target = WgpuTarget { device, name: setup.adapter.get_info().name };
    targets.insert(index, target.clone());
    Ok(target)
}

fn cuda_device(index: u32) -> Result<CudaDevice, HealthCheckError> {
    let unavailable = |reason: String| HealthCheckError::CudaUnavailable { index, reason };
    // Checked first so that the usual case, a machine without the driver,
    // gets a plain answer instead of the loader's panic message.
    #[cfg(target_os = "linux")]
    if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
        return Err(unavailable("no NVIDIA kernel driver is loaded (/proc/driver/nvidia/version is missing)".into()));
    }
    let count = guarded(|| CudaRuntime::enumerate_devices(0, &()).len()).map_err(unavailable)?;
    if index as usize >= count {
        return Err(unavailable(format!("the CUDA driver lists {count} device(s)")));
    }
    Ok(CudaDevice::new(index as usize))
}

/// `cuda:<index>`, followed by the model name NVML gives when it is certain
/// to be this device's. NVML numbers GPUs in PCI order, CUDA fastest first
/// unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`, and `CUDA_VISIBLE_DEVICES`
/// renumbers them; the same index names the same GPU only when the orders
/// agree, or when all GPUs are the same model anyway.
fn cuda_device_name(index: u32) -> String {
    let ordinal = format!("cuda:{index}");
    let Ok(nvml) = nvml_wrapper::Nvml::init() else { return ordinal };
    let names: Vec<String> = (0..nvml.device_count().unwrap_or(0))
        .filter_map(|i| nvml.device_by_index(i).ok().and_then(|d| d.name().ok()))
        .collect();
    let one_model = !names.is_empty() && names.iter().all(|name| *name == names[0]);
    let orders_agree = std::env::var("CUDA_DEVICE_ORDER").is_ok_and(|order| order == "PCI_BUS_ID")
        && std::env::var_os("CUDA_VISIBLE_DEVICES").is_none();
    let name = if one_model {
        names.first()
    } else if orders_agree {
        names.get(index as usize)
    } else {
        None
    };
    match name {
        Some(name) => format!("{ordinal} {name}"),
        None => ordinal,
    }
}

/// Runs `f`, turning a panic into its message. cubecl panics where a driver
/// or device is missing; the agent must outlive that.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the runtime panicked".to_string());
        // cubecl runs each device's server on a thread of its own. When that
        // thread panics, the caller only sees the dropped channel; the
        // thread's own message went to stderr.
        if message.contains("RecvError") {
            return "the cubecl device thread stopped (it panicked; its message is on the agent's stderr)".into();
        }
        // Loader messages run over several lines; a report wants one.
        format!("cubecl panicked: {}", message.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

/// An `n`x`n` row-major matrix of values in [-1, 1) from a xorshift64
/// generator: the same for a given seed on every machine.
fn pseudo_random_matrix(n: u32, seed: u64) -> Vec<f32> {
    let mut state = seed.max(1);
    (0..n as usize * n as usize)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The top 24 bits fit an f32 mantissa exactly.
            let unit = (state >> 40) as f32 / (1u32 << 24) as f32;
            unit * 2.0 - 1.0
        })
        .collect()
}

/// `a * b` by the plain triple loop, accumulated in f64 so that the
/// reference is more accurate than the f32 device result it judges.
fn cpu_reference(a: &[f32], b: &[f32], n: u32) -> Vec<f64> {
    let n = n as usize;
    let mut c = vec![0.0f64; n * n];
    for i in 0..n {
        let row = &mut c[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = f64::from(a[i * n + k]);
            for (cij, bkj) in row.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                *cij += aik * f64::from(*bkj);
            }
        }
    }
    c
}

/// How a device result compares with the CPU reference.
#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    checksum: f64,
    reference_checksum: f64,
    max_abs_error: f64,
    passed: bool,
    /// The end of the report's detail sentence: that it matches, or which
    /// check failed and by how much.
    verdict: String,
}

fn compare(n: u32, result: &[f32], reference: &[f64], tolerance: f64) -> Comparison {
    let checksum: f64 = result.iter().map(|&x| f64::from(x)).sum();
    let reference_checksum: f64 = reference.iter().sum();
    let checksum_allowed = tolerance * reference.iter().map(|r| r.abs()).sum::<f64>().max(1.0);
    let element_allowed = tolerance * reference.iter().fold(1.0f64, |m, r| m.max(r.abs()));

    // The worst element, where a value that is not a number is worst of all.
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&x, &r)) in result.iter().zip(reference).enumerate() {
        let err = (f64::from(x) - r).abs();
        let worse = match worst {
            None => true,
            Some((_, w)) => err.is_nan() && !w.is_nan() || err > w,
        };
        if worse {
            worst = Some((i, err));
        }
    }
    let (worst_index, max_abs_error) = worst.unwrap_or((0, 0.0));
    let checksum_diff = (checksum - reference_checksum).abs();

    let n = n as usize;
    let (row, col) = (worst_index / n.max(1), worst_index % n.max(1));
    // `<=` is false for NaN, so a non-finite result never passes.
    let elements_ok = max_abs_error <= element_allowed;
    let checksum_ok = checksum_diff <= checksum_allowed;
    let verdict = if !elements_ok {
        format!(
            "element ({row}, {col}) is {} but the CPU reference is {:.6} (error {max_abs_error:.3e}, allowed {element_allowed:.3e})",
            result[worst_index], reference[worst_index]
        )
    } else if !checksum_ok {
        format!(
            "checksum {checksum:.4} does not match CPU reference {reference_checksum:.4} (difference {checksum_diff:.3e}, allowed {checksum_allowed:.3e})"
        )
    } else {
        format!("checksum {checksum:.4} matches CPU reference {reference_checksum:.4} (max error {max_abs_error:.1e})")
    };
    Comparison { checksum, reference_checksum, max_abs_error, passed: elements_ok && checksum_ok, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wgpu path must really run here: CI installs lavapipe through
    /// `scripts/install-deps`, so a missing adapter fails the test.
    fn wgpu_check(matrix_size: u32) -> HealthCheckReport {
        let opts = HealthCheckOptions { matrix_size, iterations: 1, ..Default::default() };
        run_health_check(HealthCheckRuntime::Wgpu, 0, &opts)
            .unwrap_or_else(|e| panic!("wgpu health check of {matrix_size}x{matrix_size} could not run: {e}"))
    }

    #[test]
    fn wgpu_matmul_matches_the_cpu_reference() {
        // 100 is not a multiple of the 16-wide tile: the edge tiles must be
        // padded correctly for the result to match.
        for n in [64, 100, 256] {
            let report = wgpu_check(n);
            assert!(report.passed, "{n}x{n}: {}", report.detail);
            assert_eq!(report.runtime, HealthCheckRuntime::Wgpu);
            assert_eq!(report.matrix_size, n);
            assert!(!report.device.is_empty());
            assert!(report.gflops > 0.0 && report.gflops.is_finite(), "{n}x{n}: {} GFLOP/s", report.gflops);
            assert!(report.elapsed_ms > 0.0);
            assert!((report.checksum - report.reference_checksum).abs() < 1e-2, "{report:?}");
            assert!(report.detail.contains("matches CPU reference"), "{}", report.detail);
            eprintln!("{} ({:.2} GFLOP/s)", report.detail, report.gflops);
        }
    }

    /// The default check, for a look at a machine's numbers:
    /// `cargo test --release -p claw-nodeagent default_check -- --ignored --nocapture`.
    #[test]
    #[ignore = "slow in debug builds: the CPU reference of 512x512 takes seconds"]
    fn default_check_on_wgpu() {
        let report = run_health_check(HealthCheckRuntime::Wgpu, 0, &HealthCheckOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{report:#?}");
        assert!(report.passed, "{}", report.detail);
    }

    #[test]
    fn a_missing_wgpu_adapter_is_an_error() {
        let err = run_health_check(HealthCheckRuntime::Wgpu, 999, &HealthCheckOptions::default()).unwrap_err();
        assert!(matches!(err, HealthCheckError::WgpuAdapterUnavailable { index: 999, .. }), "{err}");
    }

    #[test]
    fn cuda_without_a_driver_is_an_error_not_a_panic() {
        if std::path::Path::new("/proc/driver/nvidia/version").exists() {
            eprintln!("SKIPPED cuda_without_a_driver_is_an_error_not_a_panic: this machine has an NVIDIA driver");
            return;
        }
        let err = run_health_check(HealthCheckRuntime::Cuda, 0, &HealthCheckOptions::default()).unwrap_err();
        assert!(matches!(err, HealthCheckError::CudaUnavailable { index: 0, .. }), "{err}");
        assert!(err.to_string().starts_with("CUDA device 0 not available: "), "{err}");
    }

    #[test]
    fn cuda_matmul_matches_the_cpu_reference_on_an_nvidia_gpu() {
        if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
            eprintln!(
                "SKIPPED cuda_matmul_matches_the_cpu_reference_on_an_nvidia_gpu: no NVIDIA driver on this machine"
            );
            return;
        }
        let opts = HealthCheckOptions { matrix_size: 100, iterations: 1, ..Default::default() };
        let report = run_health_check(HealthCheckRuntime::Cuda, 0, &opts).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.passed, "{}", report.detail);
        assert!(report.device.starts_with("cuda:0"), "{}", report.device);
    }

    #[test]
    fn a_corrupted_result_fails_and_names_the_element() {
        let n = 32;
        let a = pseudo_random_matrix(n, SEED_A);
        let b = pseudo_random_matrix(n, SEED_B);
        let reference = cpu_reference(&a, &b, n);
        let good: Vec<f32> = reference.iter().map(|&r| r as f32).collect();
        let ok = compare(n, &good, &reference, 1e-3);
        assert!(ok.passed, "{}", ok.verdict);

        let mut bad = good.clone();
        bad[3 * 32 + 7] += 1.0;
        let cmp = compare(n, &bad, &reference, 1e-3);
        assert!(!cmp.passed);
        assert!(cmp.verdict.starts_with("element (3, 7) is "), "{}", cmp.verdict);
        assert!((cmp.max_abs_error - 1.0).abs() < 1e-3, "{}", cmp.max_abs_error);

        let mut nan = good;
        nan[5] = f32::NAN;
        let cmp = compare(n, &nan, &reference, 1e-3);
        assert!(!cmp.passed);
        assert!(cmp.verdict.starts_with("element (0, 5) is NaN"), "{}", cmp.verdict);
    }

    #[test]
    fn a_small_error_in_every_element_fails_on_the_checksum() {
        let n = 64;
        let reference = cpu_reference(&pseudo_random_matrix(n, SEED_A), &pseudo_random_matrix(n, SEED_B), n);
        let scale = reference.iter().fold(0.0f64, |m, r| m.max(r.abs()));
        // Each element is off by 90% of the element tolerance, but always in
        // the same direction, so the sum drifts far beyond its tolerance.
        let shifted: Vec<f32> = reference.iter().map(|&r| (r + 0.9e-3 * scale) as f32).collect();
        let cmp = compare(n, &shifted, &reference, 1e-3);
        assert!(!cmp.passed);
        assert!(cmp.verdict.starts_with("checksum "), "{}", cmp.verdict);
        assert!(cmp.verdict.contains("does not match CPU reference"), "{}", cmp.verdict);
    }

    #[test]
    fn the_cpu_reference_multiplies() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        assert_eq!(cpu_reference(&a, &b, 2), vec![19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn inputs_are_reproducible_and_within_range() {
        let m = pseudo_random_matrix(16, SEED_A);
        assert_eq!(m, pseudo_random_matrix(16, SEED_A));
        assert_ne!(m, pseudo_random_matrix(16, SEED_B));
        assert!(m.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn bad_options_are_refused() {
        for opts in [
            HealthCheckOptions { matrix_size: 0, ..Default::default() },
            HealthCheckOptions { matrix_size: MAX_MATRIX_SIZE + 1, ..Default::default() },
            HealthCheckOptions { iterations: 0, ..Default::default() },
            HealthCheckOptions { tolerance: f64::NAN, ..Default::default() },
            HealthCheckOptions { tolerance: 0.0, ..Default::default() },
        ] {
            let err = run_health_check(HealthCheckRuntime::Wgpu, 0, &opts).unwrap_err();
            assert!(matches!(err, HealthCheckError::InvalidOptions(_)), "{opts:?}: {err}");
        }
    }

    #[test]
    fn cuda_is_picked_only_where_nvml_sees_gpus() {
        assert_eq!(pick_runtime(0), HealthCheckRuntime::Wgpu);
        assert_eq!(pick_runtime(2), HealthCheckRuntime::Cuda);
        assert_eq!(HealthCheckRuntime::Cuda.as_str(), "cuda");
        assert_eq!(HealthCheckRuntime::Wgpu.to_string(), "wgpu");
    }

    #[test]
    fn options_and_reports_round_trip_through_serde() {
        let opts: HealthCheckOptions = toml::from_str("matrix_size = 128").unwrap();
        assert_eq!(opts, HealthCheckOptions { matrix_size: 128, ..Default::default() });
        let report = HealthCheckReport {
            runtime: HealthCheckRuntime::Wgpu,
            device: "llvmpipe".into(),
            device_index: 0,
            matrix_size: 128,
            passed: true,
            gflops: 1.5,
            checksum: 2.0,
            reference_checksum: 2.0,
            max_abs_error: 1e-6,
            elapsed_ms: 3.0,
            detail: "fine".into(),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""runtime":"wgpu""#), "{json}");
        assert_eq!(serde_json::from_str::<HealthCheckReport>(&json).unwrap(), report);
    }
}
