//! The machine a run happened on, for the report: a figure without its
//! machine cannot be compared with anything.
//!
//! Read from Linux's `/proc` and `/etc/os-release`; on other systems the
//! fields it cannot find say `unknown`.

use serde::Serialize;

/// CPU, cores, kernel, OS and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    pub hostname: String,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// Processors listed in `/proc/cpuinfo`.
    pub logical_cpus: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub os: String,
    /// `MemTotal` from `/proc/meminfo`.
    pub memory_bytes: u64,
    /// The librdkafka that generated the load.
    pub librdkafka: String,
}

const UNKNOWN: &str = "unknown";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Describes this machine.
pub fn detect() -> Machine {
    let (cpu_model, logical_cpus) = parse_cpuinfo(&read("/proc/cpuinfo"));
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let hostname = read("/proc/sys/kernel/hostname").trim().to_string();
    Machine {
        hostname: non_empty(hostname),
        cpu_model: cpu_model.unwrap_or_else(|| UNKNOWN.into()),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        logical_cpus,
        kernel: non_empty(kernel),
        os: parse_os_release(&read("/etc/os-release")).unwrap_or_else(|| UNKNOWN.into()),
        memory_bytes: parse_meminfo(&read("/proc/meminfo")).unwrap_or(0),
        librdkafka: rdkafka::util::get_rdkafka_version().1,
    }
}

fn non_empty(s: String) -> String {
    if s.is_empty() {
        UNKNOWN.into()
    } else {
        s
    }
}

/// The first `model name` and the number of `processor` entries.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, usize) {
    let mut model = None;
    let mut processors = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => processors += 1,
            "model name" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    (model, processors)
}

/// `MemTotal` in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PRETTY_NAME`, without its quotes.
pub fn parse_os_release(text: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim().trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_the_model_and_the_processor_count() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7R13\nflags\t: fpu\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7R13\n";
        assert_eq!(parse_cpuinfo(text), (Some("AMD EPYC 7R13".to_string()), 2));
        assert_eq!(parse_cpuinfo(""), (None, 0));
    }

    #[test]
    fn meminfo_is_in_kibibytes() {
        assert_eq!(
            parse_meminfo("MemTotal:       24684084 kB\nMemFree: 1 kB\n"),
            Some(24_684_084 * 1024)
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn os_release_pretty_name_loses_its_quotes() {
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".to_string())
        );
    }

    #[test]
    fn this_machine_is_described() {
        let m = detect();
        assert!(m.cores >= 1);
        assert!(!m.librdkafka.is_empty());
    }
}
