//! Int8 execution layer: quantized tensors and integer kernels with PyTorch's CPU semantics
//! (`torch.ops.quantized.*`, torch 2.5.1), bit-exact against PyTorch's `int_repr()` for both
//! quantized engines (issue 5; the fast kernels of issue 8 plug in behind [`Int8Kernels`]).
//!
//! Building blocks:
//! - [`tensor`]: [`QTensor`] (quint8 activations, per-tensor qparams, NCHW or channels-last
//!   [`MemoryFormat`]), [`QWeight`] (qint8
//!   weights, per-tensor or per-output-channel), [`quantize_per_tensor`] / dequantize;
//! - [`engine`]: [`Engine`] — which PyTorch engine's arithmetic to reproduce (`qnnpack` or
//!   `x86`/`fbgemm`);
//! - [`requant`]: the requantization arithmetic of both engines (int32 accumulator → quint8);
//! - [`conv`], [`linear`], [`add`], [`pool`], [`avg_pool`]: the ops, each prepared once ([`Int8Conv2d::new`]
//!   packs weights and precomputes multipliers) and run many times;
//! - [`kernels`]: the [`Int8Kernels`] interface, the portable [`Reference`] and [`Direct`]
//!   kernels, the AVX2 ones (`kernels::x86_64`), and [`Auto`], which picks the fastest at run time.
//!
//! ```
//! use burn_qat::int8::{Engine, Int8Conv2d, Conv2dSpec, QTensor, QWeight, QParamsPt};
//!
//! # fn main() -> burn_qat::Result<()> {
//! let x = QTensor::quantize(&[0.5; 2 * 4 * 4], &[1, 2, 4, 4], QParamsPt::new(0.02, 3)?)?;
//! let w = QWeight::quantize_per_channel(&[0.1; 3 * 2 * 3 * 3], &[3, 2, 3, 3], &[0.01; 3], &[0; 3])?;
//! let conv = Int8Conv2d::new(
//!     w,
//!     Some(vec![0.0, 0.1, -0.1]),
//!     Conv2dSpec { stride: 1, padding: 1, groups: 1, relu: true },
//!     x.qparams(),
//!     QParamsPt::new(0.05, 0)?,
//!     Engine::Qnnpack,
//! )?;
//! let y = conv.forward(&x)?;
//! assert_eq!(y.shape(), &[1, 3, 4, 4]);
//! # Ok(())
//! # }
//! ```

pub mod add;
pub mod avg_pool;
pub mod buffer;
pub mod cat;
pub mod conv;
pub mod engine;
pub mod hardsigmoid;
pub mod hardswish;
pub mod kernels;
pub mod linear;
pub mod mean;
pub mod mul;
pub mod narrow;
pub mod pool;
pub mod requant;
pub mod shuffle;
pub mod tensor;

pub use add::Int8Add;
pub use avg_pool::{AvgPool2dSpec, avg_pool2d};
pub use cat::Int8Cat;
pub use conv::{Conv2dSpec, Int8Conv2d};
pub use engine::Engine;
pub use kernels::{Auto, Direct, Int8Kernels, Reference, on_thread_pool};
pub use linear::Int8Linear;
pub use mean::spatial_mean;
pub use mul::Int8Mul;
pub use pool::{PoolInputLayout, adaptive_avg_pool2d_1x1};
pub use requant::Requant;
pub use tensor::{
    MemoryFormat, QParamsPt, QTensor, QWeight, WeightQParams, dequantize, quantize_per_tensor,
};
