//! CPU time and resident memory of local processes, read from `/proc`.
//!
//! `/proc/<pid>/stat` fields 14 and 15 (`utime`, `stime`) count the CPU time of every
//! thread of the process in clock ticks; Linux reports them in `USER_HZ` = 100 ticks
//! per second on every architecture it runs on, so the resolution is 10 ms (over a
//! row of hundreds of signatures, well under 1 % of what is measured).

use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reading {
    /// User + system CPU seconds since the process started.
    pub(crate) cpu_seconds: f64,
    /// Resident set size, bytes.
    pub(crate) rss_bytes: u64,
}

/// Reads `/proc/<pid>` (`"self"` for this process). `None` if the process is gone or
/// `/proc` is not there.
pub(crate) fn read(pid: &str) -> Option<Reading> {
    let dir = Path::new("/proc").join(pid);
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let cpu_seconds = cpu_from_stat(&stat)?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let rss_bytes = rss_from_status(&status).unwrap_or(0);
    Some(Reading {
        cpu_seconds,
        rss_bytes,
    })
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field
/// 2) is in parentheses and may contain spaces, so fields are counted after the last
/// `)`: field 3 (`state`) is the first there, `utime` the 12th and `stime` the 13th.
fn cpu_from_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_after_the_command_name_even_with_spaces_and_parentheses() {
        let stat = "4242 (quorate (node) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_from_stat(stat), Some(3.25));
        assert_eq!(cpu_from_stat("garbage"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tquorate\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(rss_from_status(status), Some(2048 * 1024));
    }

    #[test]
    fn this_process_can_be_read() {
        let r = read("self").expect("/proc/self");
        assert!(r.rss_bytes > 0);
    }
}
