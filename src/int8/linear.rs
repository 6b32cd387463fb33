//! Quantized linear layer (`torch.ao.nn.quantized.Linear` / `LinearReLU`, i.e.
//! `quantized::linear` / `quantized::linear_relu` with prepacked weights).
//!
//! ```text
//! acc[n,o] = Σ_k (q_in[n,k] − z_in) · (q_w[o,k] − z_w[o])
//! ```
//! then the engine's requantization ([`crate::int8::requant`]).

use super::buffer::Buffer;
use super::engine::Engine;
use super::kernels::{DEFAULT, Int8Kernels};
use super::requant::{Requant, requant_for_input};
use super::tensor::{MemoryFormat, QParamsPt, QTensor, QWeight};
use crate::{Error, Result};

/// A prepared quantized linear layer.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    weight: QWeight,
    /// `q_w − z_w`, `[out, in]`.
    packed: Vec<i16>,
    /// Every zero-point is 0 (see [`Int8Linear::symmetric_weight`]).
    symmetric: bool,
    bias: Option<Vec<f32>>,
    relu: bool,
    in_features: usize,
    out_features: usize,
    engine: Engine,
    input_scale: f32,
    /// The requantization for the first input scale other than `input_scale`.
    seen_input: std::sync::OnceLock<(f32, Requant)>,
    output: QParamsPt,
    requant: Requant,
}

impl Int8Linear {
    /// Prepares a linear layer: qint8 `weight` `[out, in]` (per-tensor or per-channel), float
    /// `bias` of length `out`, the expected `input` qparams (see [`crate::int8::Int8Conv2d::new`]),
    /// the `output` qparams, a fused ReLU when `relu`.
    pub fn new(
        weight: QWeight,
        bias: Option<Vec<f32>>,
        relu: bool,
        input: QParamsPt,
        output: QParamsPt,
        engine: Engine,
    ) -> Result<Self> {
        let shape = weight.shape();
        if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
            return Err(Error::Shape(format!(
                "linear weight must be a non-empty [out, in], got {shape:?}"
            )));
        }
        let (out_features, in_features) = (shape[0], shape[1]);
        if let Some(b) = &bias
            && b.len() != out_features
        {
            return Err(Error::Shape(format!(
                "linear bias has {} values for {out_features} outputs",
                b.len()
            )));
        }
        let packed = weight
            .data()
            .iter()
            .enumerate()
            .map(|(i, &q)| (q as i16) - weight.qparams().channel(i / in_features).1 as i16)
            .collect();
        let symmetric = (0..out_features).all(|o| weight.qparams().channel(o).1 == 0);
        let requant = Requant::new(
            engine,
            out_features,
            weight.qparams(),
            bias.as_deref(),
            input.scale,
            output,
            relu,
        );
        Ok(Int8Linear {
            weight,
            packed,
            symmetric,
            bias,
            relu,
            in_features,
            out_features,
            engine,
            input_scale: input.scale,
            seen_input: std::sync::OnceLock::new(),
            output,
            requant,
        })
    }

    /// Runs the layer with the default kernels ([`DEFAULT`]).
    pub fn forward(&self, input: &QTensor) -> Result<QTensor> {
        self.forward_with(&DEFAULT, input)
    }

    /// Runs the layer with the given kernels on a `[n, in_features]` quint8 input.
    pub fn forward_with(&self, kernels: &dyn Int8Kernels, input: &QTensor) -> Result<QTensor> {
        let s = input.shape();
        if s.len() != 2 || s[1] != self.in_features {
            return Err(Error::Shape(format!(
                "linear expects a [n, {}] input, got {s:?}",
                self.in_features
            )));
        }
        let mut out = Buffer::new(s[0] * self.out_features);
        let rq = requant_for_input(
            &self.requant,
            self.input_scale,
            &self.seen_input,
            input.qparams().scale,
            |s| {
                Requant::new(
                    self.engine,
                    self.out_features,
                    self.weight.qparams(),
                    self.bias.as_deref(),
                    s,
                    self.output,
                    self.relu,
                )
            },
        );
        kernels.linear(self, &rq, input, &mut out);
        QTensor::from_buffer(
            out,
            &[s[0], self.out_features],
            self.output,
            MemoryFormat::Contiguous,
        )
    }

    /// The packed weights `q_w − z_w`, `[out, in]`.
    pub fn packed_weight(&self) -> &[i16] {
        &self.packed
    }

    /// The weights `q_w`, `[out, in]`, when every zero-point is 0 (symmetric weights, as
    /// PyTorch's default qconfigs make): then they are `q_w − z_w` at half the bytes of
    /// [`Self::packed_weight`], which a batch-1 pass reads whole.
    pub fn symmetric_weight(&self) -> Option<&[i8]> {
        self.symmetric.then(|| self.weight.data())
    }

    /// The original quantized weight.
    pub fn weight(&self) -> &QWeight {
        &self.weight
    }

    /// The float bias.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The engine whose arithmetic this reproduces.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Output scale and zero-point.
    pub fn output_qparams(&self) -> QParamsPt {
        self.output
    }
}
