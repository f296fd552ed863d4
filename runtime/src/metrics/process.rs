//! The process's own figures for the standard `process_*` families (and
//! etcd's `os_fd_*`), read from Linux's `/proc` at scrape time. A
//! simulation build has no process of its own to describe: `None`.

/// One reading of the process's resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft limit on open files.
    pub max_fds: u64,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Linux reports CPU times and start times in USER_HZ ticks, fixed at 100
/// for user space on every architecture Rust targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the current figures; `None` where there is no `/proc` to read.
pub fn read() -> Option<ProcessStats> {
    #[cfg(not(madsim))]
    {
        read_proc(std::path::Path::new("/proc"))
    }
    #[cfg(madsim)]
    {
        None
    }
}

#[cfg(not(madsim))]
fn read_proc(proc: &std::path::Path) -> Option<ProcessStats> {
    let stat = std::fs::read_to_string(proc.join("self/stat")).ok()?;
    let status = std::fs::read_to_string(proc.join("self/status")).ok()?;
    let limits = std::fs::read_to_string(proc.join("self/limits")).ok()?;
    let system = std::fs::read_to_string(proc.join("stat")).ok()?;
    let open_fds = std::fs::read_dir(proc.join("self/fd")).ok()?.count() as u64;
    parse(&stat, &status, &limits, &system, open_fds)
}

/// Builds the figures from the texts of `/proc/self/stat`,
/// `/proc/self/status`, `/proc/self/limits` and `/proc/stat`.
pub fn parse(
    stat: &str,
    status: &str,
    limits: &str,
    system: &str,
    open_fds: u64,
) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let boot_time = system
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        resident_bytes: kib("VmRSS:").unwrap_or(0),
        virtual_bytes: kib("VmSize:").unwrap_or(0),
        open_fds,
        max_fds,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / TICKS_PER_SECOND,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_files() {
        let stat = "4242 (cairn (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 12345 1000 200";
        let status = "Name:\tcairn\nVmSize:\t  204800 kB\nVmRSS:\t   51200 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            40000                524288               files\n";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let s = parse(stat, status, limits, system, 17).expect("parses");
        assert_eq!(s.cpu_seconds, 3.25);
        assert_eq!(s.resident_bytes, 51200 * 1024);
        assert_eq!(s.virtual_bytes, 204800 * 1024);
        assert_eq!(s.max_fds, 40000);
        assert_eq!(s.open_fds, 17);
        assert!((s.start_time_seconds - 1_700_000_123.45).abs() < 1e-3);
    }

    #[cfg(not(madsim))]
    #[test]
    fn reads_this_process() {
        let s = read().expect("/proc is readable");
        assert!(s.resident_bytes > 0 && s.open_fds > 0 && s.max_fds > 0);
        assert!(s.start_time_seconds > 1.6e9);
    }
}
