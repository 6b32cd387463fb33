//! Which PyTorch quantized engine's arithmetic an int8 op reproduces.

use crate::quant::QuantBackend;
use crate::{Error, Result};

/// A PyTorch quantized CPU engine (`torch.backends.quantized.engine`).
///
/// The engines agree on the integer accumulation but not on the requantization: see
/// [`crate::int8::requant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// `"qnnpack"`: int32 bias `round(b / (s_in·s_w))`, fp32 requantization, fixed-point add and
    /// average pooling.
    Qnnpack,
    /// `"x86"` / `"fbgemm"`: float bias added to the float-converted accumulator, native ATen add
    /// and average pooling. This is fbgemm's arithmetic; on Linux CPUs with AVX512-VNNI PyTorch's
    /// `"x86"` engine may route convolutions to oneDNN instead (see `scripts/gen_int8_fixtures.py`).
    X86,
}

impl Engine {
    /// The engine for a qconfig backend: `x86` and `fbgemm` run fbgemm's arithmetic; `onednn` has
    /// no reference kernels here.
    pub fn from_backend(backend: QuantBackend) -> Result<Self> {
        match backend {
            QuantBackend::Qnnpack => Ok(Engine::Qnnpack),
            QuantBackend::X86 | QuantBackend::Fbgemm => Ok(Engine::X86),
            QuantBackend::Onednn => Err(Error::Quant(
                "the int8 kernels implement the qnnpack and x86/fbgemm engines, not onednn".into(),
            )),
        }
    }
}

impl Engine {
    /// PyTorch's name of the engine (`"qnnpack"`, `"x86"`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Qnnpack => "qnnpack",
            Engine::X86 => "x86",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Engine {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "qnnpack" => Ok(Engine::Qnnpack),
            "x86" | "fbgemm" => Ok(Engine::X86),
            other => Err(Error::Quant(format!(
                "unknown int8 engine '{other}' (expected qnnpack, x86 or fbgemm)"
            ))),
        }
    }
}
