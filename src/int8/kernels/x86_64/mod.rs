//! x86-64 kernel variants, chosen at run time by CPU feature ([`super::Auto`]).

mod avx2;
mod avx2_add;
pub(super) mod avx2_avg_pool;
pub(super) mod avx2_bytewise;
mod avx2_dense;
mod avx2_depthwise;
mod avx2_dw_nhwc;
pub(super) mod avx2_mul;
pub(super) mod avx2_quantize;
mod avx2_u8s8;
mod avx512_add;
pub(super) mod avx512_avg_pool;
pub(super) mod avx512_bytewise;
mod avx512_dense;
mod avx512_depthwise;
mod avx512_dw_taps;
mod avx512_lanes;
pub(super) mod avx512_mul;
mod avx512_vnni;
mod dense_nhwc;
mod dw_segments;

pub use avx2::Avx2;
pub use avx512_vnni::Avx512Vnni;
