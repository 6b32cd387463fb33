//! Run-time CPU dispatch for the ops' slice kernels, after `tract-linalg`: each kernel body is
//! written once, in portable Rust, and compiled twice — for baseline x86-64 (SSE2) and for AVX2
//! (`#[target_feature]`, chosen at run time when the CPU has it). Both builds perform the same
//! `f32` operations in the same order (explicit lanes in the reductions, no fused multiply-add:
//! Rust never contracts `a * b + c`), so they agree bit for bit; the tests hold them to it.

/// Defines `$name`, which runs `$body` built for AVX2 when the CPU has it and for baseline
/// x86-64 otherwise, and `$portable`, which always runs the baseline build (the reference the
/// tests compare the AVX2 build against). Arguments must be plain `name: Type` pairs.
macro_rules! dispatch_avx2 {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident / $portable:ident ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[$meta])*
        #[inline(never)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: this CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }

        /// The baseline (portable) build of the kernel of the same name without the suffix.
        #[inline(always)]
        $vis fn $portable($($arg: $ty),*) $(-> $ret)? $body
    };
}

pub(super) use dispatch_avx2;

/// An instruction-set level a [`dispatch_simd`] kernel was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// Baseline x86-64 (or any other target): the reference build.
    Portable,
    /// AVX2.
    Avx2,
    /// AVX-512F (512-bit vectors; Zen 4/5, Ice Lake and later).
    Avx512,
}

impl Isa {
    /// The levels this CPU runs, the reference first (what the tests hold each build to).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The widest level this CPU runs.
    pub(super) fn best() -> Isa {
        if Isa::Avx512.is_available() {
            Isa::Avx512
        } else if Isa::Avx2.is_available() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// [`dispatch_avx2`] with an AVX-512 build as well, for kernels whose inner loops gain from
/// 16-lane vectors (the inference convolutions' register-blocked taps). Defines `$name` (the
/// widest build this CPU runs), `$at` (the build of a given [`Isa`], falling back to the
/// reference where the CPU lacks it: the tests hold every build to the reference) and
/// `$portable` (the reference). Same rule as there: no fused multiply-add, so every build rounds
/// alike.
macro_rules! dispatch_simd {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident / $at:ident / $portable:ident ($($arg:ident: $ty:ty),* $(,)?)
        $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[inline]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $at($crate::ops::simd::Isa::best(), $($arg),*)
        }

        /// The build of the kernel of the same name for `isa` (the reference where this CPU
        /// lacks `isa`).
        #[inline(never)]
        #[allow(dead_code)]
        $vis fn $at(isa: $crate::ops::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                use $crate::ops::simd::Isa;
                if isa == Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: this CPU has AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if isa != Isa::Portable && std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: this CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            let _ = isa;
            $portable($($arg),*)
        }

        /// The baseline (portable) build of the kernel of the same name.
        #[inline(always)]
        $vis fn $portable($($arg: $ty),*) $(-> $ret)? $body
    };
}
pub(super) use dispatch_simd;
