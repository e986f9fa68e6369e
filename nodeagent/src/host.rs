/// CPUs and memory of this machine, read from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostInfo {
    pub cpus: u32,
    pub memory_mb: u64,
}

impl HostInfo {
    pub fn read() -> HostInfo {
        let cpus = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .map(|t| count_processors(&t))
            .filter(|n| *n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get() as u32))
            .unwrap_or(0);
        let memory_mb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_total_mb(&t)).unwrap_or(0);
        HostInfo { cpus, memory_mb }
    }
}

fn count_processors(cpuinfo: &str) -> u32 {
    cpuinfo.lines().filter(|l| l.split(':').next().map(str::trim) == Some("processor")).count() as u32
}

fn mem_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.trim_start_matches("MemTotal:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        assert_eq!(count_processors(cpuinfo), 2);
        let meminfo = "MemTotal:       16384000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_mb(meminfo), Some(16000));
        assert_eq!(mem_total_mb("nothing"), None);
    }

    #[test]
    fn this_machine_has_cpus_and_memory() {
        let h = HostInfo::read();
        assert!(h.cpus > 0 && h.memory_mb > 0, "{h:?}");
    }
}
