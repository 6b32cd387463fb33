//! Size checks before allocation: every size a user gives (a flag, a file header, a model
//! configuration) is turned into a byte count with checked arithmetic and held against the
//! memory the machine has, so that an absurd value is an error naming its source instead of an
//! allocation abort or a `capacity overflow` panic.

use std::fmt;

/// Test hook (hidden): caps [`available_memory`] at this many bytes, so tests can exercise the
/// refusal without depending on the size of the machine they run on.
#[doc(hidden)]
pub const MEMORY_LIMIT_ENV: &str = "BURN_QAT_MEMORY_LIMIT";

/// A byte count, printed in binary units (`1.5 GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} bytes", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

/// Bytes this process can still allocate: the machine's available memory (`MemAvailable` on
/// Linux, which counts reclaimable caches), capped by [`MEMORY_LIMIT_ENV`] when set. `None`
/// where it cannot be told (other systems): only arithmetic overflow is refused there.
pub fn available_memory() -> Option<u64> {
    let cap = std::env::var(MEMORY_LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let machine = mem_available();
    match (machine, cap) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

#[cfg(target_os = "linux")]
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(not(target_os = "linux"))]
fn mem_available() -> Option<u64> {
    None
}

/// Checks that `bytes` (`None`: the size computation overflowed) can be allocated. The error
/// is the reason, to be prefixed by whoever knows which flag or file asked for it.
pub fn check_fits(bytes: Option<u64>) -> Result<(), String> {
    let Some(bytes) = bytes else {
        return Err("the size overflows 64-bit arithmetic".into());
    };
    match available_memory() {
        Some(available) if bytes > available => Err(format!(
            "it needs {} of memory, more than the {} available",
            Bytes(bytes),
            Bytes(available)
        )),
        _ => Ok(()),
    }
}

/// The product of `factors` as a byte count, `None` on overflow (for [`check_fits`]).
pub fn product(factors: impl IntoIterator<Item = u64>) -> Option<u64> {
    factors
        .into_iter()
        .try_fold(1u64, |acc, f| acc.checked_mul(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(Bytes(12).to_string(), "12 bytes");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
    }

    #[test]
    fn overflow_and_huge_sizes_are_refused() {
        assert!(check_fits(product([u64::MAX, 2])).is_err());
        assert!(check_fits(None).unwrap_err().contains("overflows"));
        assert!(check_fits(Some(1024)).is_ok());
        // No machine this runs on has an exbibyte.
        if available_memory().is_some() {
            let msg = check_fits(Some(1 << 60)).unwrap_err();
            assert!(msg.contains("1024.0 PiB"), "{msg}");
        }
    }
}
