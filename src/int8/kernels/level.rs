//! The widest instruction-set level the int8 kernels may use, capped by the environment
//! variable `BURN_QAT_KERNELS` (`reference`, `avx2` or `avx512`; unset: the CPU's best). All
//! levels give the same bits, so the cap changes only the speed: it lets one machine stand in
//! for an AVX2-only CPU in a benchmark, or rule a vector kernel out when chasing a problem.

use std::sync::OnceLock;

/// The environment variable that caps the int8 kernel level.
pub const KERNELS_ENV: &str = "BURN_QAT_KERNELS";

/// An instruction-set level of the int8 kernels, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelLevel {
    /// Portable Rust only (the reference and direct kernels).
    Reference,
    /// Up to AVX2 (and FMA).
    Avx2,
    /// Up to AVX-512 (VNNI for convolutions, BW and VBMI for the byte kernels).
    Avx512,
}

impl KernelLevel {
    /// Parses a `BURN_QAT_KERNELS` value (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "reference" | "portable" | "direct" => Some(KernelLevel::Reference),
            "avx2" => Some(KernelLevel::Avx2),
            "avx512" | "avx512vnni" => Some(KernelLevel::Avx512),
            _ => None,
        }
    }
}

/// The cap from `BURN_QAT_KERNELS`, read once per process. An unknown value is reported on
/// stderr once and ignored (this runs deep inside a forward pass, which has no error to return
/// for it).
pub fn kernel_cap() -> KernelLevel {
    static CAP: OnceLock<KernelLevel> = OnceLock::new();
    *CAP.get_or_init(|| match std::env::var(KERNELS_ENV) {
        Err(_) => KernelLevel::Avx512,
        Ok(value) => KernelLevel::parse(&value).unwrap_or_else(|| {
            eprintln!(
                "warning: {KERNELS_ENV}={value:?} is not one of reference, avx2, avx512; ignored"
            );
            KernelLevel::Avx512
        }),
    })
}

/// Whether the cap allows kernels of `level`.
pub fn allows(level: KernelLevel) -> bool {
    kernel_cap() >= level
}

#[cfg(test)]
mod tests {
    use super::KernelLevel;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(KernelLevel::parse("AVX2"), Some(KernelLevel::Avx2));
        assert_eq!(KernelLevel::parse(" avx512 "), Some(KernelLevel::Avx512));
        assert_eq!(
            KernelLevel::parse("reference"),
            Some(KernelLevel::Reference)
        );
        assert_eq!(KernelLevel::parse("sse2"), None);
        assert!(
            KernelLevel::Reference < KernelLevel::Avx2 && KernelLevel::Avx2 < KernelLevel::Avx512
        );
    }
}
