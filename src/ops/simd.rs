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
