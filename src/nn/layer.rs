//! What a quantizable layer owns: its change at every stage of the workflow, as each PyTorch
//! module class owns its `from_float`. [`QuantLayer`] is the stage side (fuse, prepare, the QAT
//! switches, convert, the int8 state dict); [`QuantOp`] the forward side (float, int8 and
//! traced-for-ONNX). The stage drivers (`fuse`, `prepare`, `convert`, save/load, export) are
//! walks over a model's layers ([`Quantizable`](super::Quantizable)) that call these and know
//! no layer kind, so a new layer kind is one file, in this crate or in yours.
//!
//! A layer written outside the crate (a scaled residual `y = a + α·b`, say) implements both
//! traits and lists itself in its model's `impl_quantizable!`; its forward is
//! `X::apply(self, vec![a, b])` for any batch type `X`. `onnx-check/tests/layers/scaled_add.rs` is one,
//! taken through prepare, QAT, convert, the int8 forward, save/load and ONNX.

use burn::tensor::{Device, Tensor};

use super::batch_norm::BatchNorm2d;
use super::qbatch::QuantizedOutput;
use super::stage::Fusion;
use crate::Result;
use crate::int8::{Engine, PoolInputLayout, QParamsPt, QTensor};
use crate::onnx::{Act, Builder};
use crate::quant::{FakeQuantize, FixedQParamsFakeQuantize, Observer, QConfig};
use crate::state::{Entries, StateDict};

/// Which `prepare` runs: observers for calibration, or fake-quants for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareMode {
    /// `torch.ao.quantization.prepare`: observers (post-training quantization).
    Ptq,
    /// `torch.ao.quantization.prepare_qat`: fake-quants (quantization-aware training).
    Qat,
}

impl PrepareMode {
    /// The fusion a conv/linear + batch norm needs before this preparation.
    pub fn fusion(self) -> Fusion {
        match self {
            PrepareMode::Ptq => Fusion::Eval,
            PrepareMode::Qat => Fusion::Qat,
        }
    }
}

/// Where a stub moves activations between float and int8 in a converted model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// `QuantStub`: float in, int8 out.
    Quantize,
    /// `DeQuantStub`: int8 in, float out.
    Dequantize,
}

/// A layer's change at each stage; the defaults are those of a layer without quantization
/// parameters or state of its own (a `DeQuantStub`, max pooling). Errors are [`Error::Stage`](crate::Error::Stage) problems
/// (or others) without the layer's path: the driver adds it. A driver runs a stage on a copy
/// of the model and keeps it only if every layer succeeded, so a method may leave its layer
/// half-changed on error.
pub trait QuantLayer {
    /// The layer's kind as users name it (`"ConvBnAct"`), for messages and per-kind qconfigs.
    fn kind(&self) -> &'static str;

    /// `fuse_modules` (`Fusion::Eval`: fold batch norm for inference) or `fuse_modules_qat`
    /// (`Fusion::Qat`). Layers with nothing to fuse keep the default.
    fn fuse(&mut self, fusion: Fusion) -> Result<()> {
        let _ = fusion;
        Ok(())
    }

    /// torchvision's `_replace_relu`: ReLU6 becomes ReLU.
    fn replace_relu(&mut self) {}

    /// `prepare` / `prepare_qat` with this layer's qconfig: attach observers or fake-quants.
    /// The default, for a layer without quantization parameters of its own, attaches nothing.
    fn prepare(&mut self, qconfig: &QConfig, mode: PrepareMode, device: &Device) -> Result<()> {
        let _ = (qconfig, mode, device);
        Ok(())
    }

    /// Calls `f` on every fake-quant of the layer (the QAT switches).
    fn for_each_fake_quant(&mut self, f: &mut dyn FnMut(&mut FakeQuantize)) {
        let _ = f;
    }

    /// Calls `f` on every fixed-qparams fake-quant of the layer (the QAT switches reach them
    /// too, as `model.apply(disable_fake_quant)` reaches every `FakeQuantizeBase`).
    fn for_each_fixed_fake_quant(&mut self, f: &mut dyn FnMut(&mut FixedQParamsFakeQuantize)) {
        let _ = f;
    }

    /// Calls `f` on every batch norm of the layer (`freeze_bn_stats`).
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d)) {
        let _ = f;
    }

    /// The observer of the layer's output once prepared (a fake-quant's own one in QAT).
    fn output_observer(&self) -> Option<&Observer> {
        None
    }

    /// `convert`: the int8 form from the observers, `input` being the qparams of the layer's
    /// input as the walk saw them (a hint; an int8 op reads the real ones at run time).
    fn convert(&mut self, input: QParamsPt, engine: Engine) -> Result<()> {
        let _ = (input, engine);
        Ok(())
    }

    /// `strip_float`, after `convert`: frees what only the float stages use (the float weight
    /// and bias, batch norm, the weight fake-quant) once the layer has its int8 form, as
    /// PyTorch's converted modules hold no float weights. A layer kept in float keeps them.
    /// The default, for a layer without float weights, frees nothing.
    fn strip_float(&mut self) {}

    /// The output qparams and engine of the int8 form, `None` before convert (and for a layer
    /// that keeps its input's qparams, as max pooling).
    fn int8_output(&self) -> Option<QuantizedOutput> {
        None
    }

    /// Whether the layer has its int8 form. A layer without quantization parameters of its own
    /// (max pooling) overrides this to `true`.
    fn is_converted(&self) -> bool {
        self.int8_output().is_some()
    }

    /// Whether the layer is a stub between float and int8 (`convert` checks, in walk order,
    /// that int8 layers get int8 inputs and float-kept layers float ones).
    fn boundary(&self) -> Option<Boundary> {
        None
    }

    /// The entry names (after the layer's path) of its int8 state dict.
    fn int8_state_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Writes the layer's entries under `path`: its int8 form's (converted), or the float
    /// weights of a layer kept in float, as PyTorch's converted model keeps them.
    fn int8_state(&self, path: &str, state: &mut StateDict) -> Result<()> {
        let _ = (path, state);
        Ok(())
    }

    /// Builds the int8 form from the entries under `path`, running `engine`'s arithmetic.
    fn load_int8_state(
        &mut self,
        path: &str,
        entries: &Entries<'_>,
        input: QParamsPt,
        engine: Engine,
    ) -> Result<()> {
        let _ = (path, entries, input, engine);
        Ok(())
    }
}

/// What a layer computes from `N` batches of rank `D` on each batch type: the float forward
/// of its current stage, its int8 forward once converted, and its ONNX nodes. Batch types call
/// these through [`Batch::apply`](super::Batch::apply).
pub trait QuantOp<const D: usize> {
    /// The layer the model's walk lists, by address (how a trace finds its module path).
    fn layer_address(&self) -> usize;

    /// The layer's kind, for errors.
    fn op_kind(&self) -> &'static str;

    /// The float forward of the current stage (float, observed or fake-quantized).
    fn forward_float(&self, inputs: Vec<Tensor<D>>) -> Tensor<D>;

    /// The int8 forward of a converted layer.
    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor>;

    /// The int8 forward, told the converted model's engine and the memory format PyTorch would
    /// hold the first input in: a layer without an engine of its own (max pooling) or whose
    /// bits depend on PyTorch's memory order (x86 hardswish) overrides this;
    /// [`Self::forward_int8`] otherwise.
    fn forward_int8_in(
        &self,
        inputs: &[&QTensor],
        engine: Engine,
        layout: PoolInputLayout,
    ) -> Result<QTensor> {
        let _ = (engine, layout);
        self.forward_int8(inputs)
    }

    /// The memory format PyTorch gives the int8 output (quantized convolutions return
    /// channels-last tensors, which average pooling's rounding depends on).
    fn int8_layout(&self, input: PoolInputLayout) -> PoolInputLayout {
        input
    }

    /// [`Self::int8_layout`] told every input and the memory format PyTorch would hold each
    /// in (`layouts`, one per input): for ops whose output format depends on more than the
    /// first input's (quantized cat, a mul whose first input is broadcast). The first input's
    /// [`Self::int8_layout`] unless overridden.
    fn int8_output_layout(
        &self,
        inputs: &[&QTensor],
        layouts: &[PoolInputLayout],
    ) -> PoolInputLayout {
        let _ = inputs;
        self.int8_layout(
            layouts
                .first()
                .copied()
                .unwrap_or(PoolInputLayout::Contiguous),
        )
    }

    /// Writes the layer's nodes for `inputs` in the builder's export form.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act>;

    /// The channel (rank 4) or feature (rank 2) count of the output, given the inputs'.
    fn output_channels(&self, inputs: &[Option<usize>]) -> Option<usize> {
        inputs.first().copied().flatten()
    }
}

/// The address `QuantOp::layer_address` and the walk agree on.
pub fn address_of<T: ?Sized>(layer: &T) -> usize {
    layer as *const T as *const () as usize
}
