//! What flows between quantizable layers, so that a model has one forward for every stage (as in
//! PyTorch's eager mode, where a module's forward does not change at convert).
//!
//! Before [`convert`](crate::convert::convert) activations are float tensors (`Tensor<D>`:
//! float, observed or fake-quantized model); after it they are quint8 tensors
//! ([`QBatch`](super::QBatch)) and every quantizable layer runs its int8 kernels. A model
//! writes its forward once, generic over the batch type, and picks the stage by the type:
//!
//! ```
//! use burn::module::Module;
//! use burn::tensor::Tensor;
//! use burn_qat::nn::{ConvBnAct, DeQuantStub, FloatFunctional, ImageBatch, QBatch, QuantStub};
//!
//! #[derive(Module, Debug)]
//! struct Block {
//!     quant: QuantStub,
//!     conv: ConvBnAct,
//!     skip_add: FloatFunctional,
//!     dequant: DeQuantStub,
//! }
//!
//! impl Block {
//!     /// The one forward: `X = Tensor<4>` before convert, `X = QBatch<4>` after.
//!     fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> X::Float {
//!         let x: X = self.quant.forward(x);
//!         let y = self.skip_add.add(x.clone(), self.conv.forward(x));
//!         self.dequant.forward(y)
//!     }
//!
//!     fn forward(&self, x: Tensor<4>) -> Tensor<4> {
//!         self.forward_as::<Tensor<4>>(x)
//!     }
//!
//!     fn forward_int8(&self, x: Tensor<4>) -> burn_qat::Result<Tensor<4>> {
//!         self.forward_as::<QBatch<4>>(x)
//!     }
//! }
//! ```

use burn::nn::Dropout;
use burn::tensor::Tensor;
use burn::tensor::module::adaptive_avg_pool2d;

use super::layer::QuantOp;
use super::post_process::PostProcess;
use super::stubs::{DeQuantStub, QuantStub};

/// The binary operations of [`FloatFunctional`](super::FloatFunctional)
/// (`torch.ao.nn.quantized.FloatFunctional`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `x + y`.
    Add,
    /// `relu(x + y)`.
    AddRelu,
    /// `x * y`.
    Mul,
    /// `x.matmul(y)`.
    Matmul,
}

/// A batch of activations of rank `D` between quantizable layers.
pub trait Batch<const D: usize>: Clone + Sized {
    /// What the model hands back at its `DeQuantStub`: `Tensor<D>` for float batches,
    /// `Result<Tensor<D>>` for int8 ones (an int8 op can refuse its inputs).
    type Float;

    /// A float tensor entering the model as a float batch of this kind (for layers kept in
    /// float before the model's `QuantStub`).
    fn from_float(x: Tensor<D>) -> Self;

    /// `QuantStub` inside the model: a float batch becomes quantized (observed or
    /// fake-quantized on float batches, as the stub's stage says).
    fn quantize_batch(stub: &QuantStub, x: Self) -> Self;

    /// `DeQuantStub` inside the model: the batch goes on in float.
    fn dequantize_batch(stub: &DeQuantStub, x: Self) -> Self;

    /// `QuantStub` on the model's input: a float input becomes a batch of this kind.
    fn quantize(stub: &QuantStub, x: Tensor<D>) -> Self {
        Self::quantize_batch(stub, Self::from_float(x))
    }

    /// `DeQuantStub` at the model's output: back to float.
    fn dequantize(self) -> Self::Float;

    /// A layer on `inputs`, in the form this batch type runs: the layer's float forward of its
    /// current stage, its int8 forward, or its ONNX nodes. Every layer's `forward` is this
    /// call, so a layer of yours runs on every batch type by implementing [`QuantOp`].
    fn apply<L: QuantOp<D>>(layer: &L, inputs: Vec<Self>) -> Self;

    /// Dropout (identity at inference, and always on int8 batches).
    fn dropout(self, dropout: &Dropout) -> Self;
}

/// A batch of images `[N, C, H, W]`.
pub trait ImageBatch: Batch<4> {
    /// The batch of feature vectors of the same kind.
    type Flat: FeatureBatch;

    /// `flatten(adaptive_avg_pool2d(x, 1), 1)`: `[N, C, H, W]` → `[N, C]`.
    fn global_avg_pool_flatten(self) -> Self::Flat;

    /// ShuffleNetV2's `channel_shuffle(x, groups)` (torchvision): `[N, C, H, W]` viewed as
    /// `[N, g, C/g, H, W]`, its two channel axes swapped, and viewed back, so output channel
    /// `j·g + i` is input channel `i·(C/g) + j`. Pure data movement: int8 batches keep their
    /// qparams (see [`crate::int8::shuffle`]), and ONNX gets `Reshape → Transpose → Reshape`.
    /// `C` must be a multiple of `groups` (a model fixes both when it is built); an int8 or
    /// traced batch reports it as an error, a float one panics, as PyTorch's `view` raises.
    fn channel_shuffle(self, groups: usize) -> Self;

    /// `x.narrow(1, start, len)`: channels `start .. start + len` (ShuffleNetV2's
    /// `x.chunk(2, dim=1)` is `narrow(0, C/2)` and `narrow(C/2, C/2)`). Pure data movement: an
    /// int8 slice keeps its input's qparams, and PyTorch would hold it as a non-contiguous
    /// view, so a quantized `cat` taking it runs its general path (dequantize, cat, quantize);
    /// ONNX gets a `Slice`. A range past the channels is an error on int8 and traced batches
    /// and a panic on float ones, as PyTorch's `narrow` raises.
    fn narrow_channels(self, start: usize, len: usize) -> Self;

    /// `x.mean([2, 3])`: `[N, C, H, W]` → `[N, C]` (ShuffleNetV2's global pooling). The same
    /// float values as [`Self::global_avg_pool_flatten`], but quantized `mean` rounds its own
    /// way (see [`crate::int8::mean`]); ONNX gets `GlobalAveragePool → Flatten`.
    fn spatial_mean(self) -> Self::Flat;
}

/// A batch of feature vectors `[N, F]`.
pub trait FeatureBatch: Batch<2> {}

impl<const D: usize> Batch<D> for Tensor<D> {
    type Float = Tensor<D>;

    fn from_float(x: Tensor<D>) -> Self {
        x
    }

    fn quantize_batch(stub: &QuantStub, x: Self) -> Self {
        stub.activation_post_process.post_process(x)
    }

    fn dequantize_batch(_: &DeQuantStub, x: Self) -> Self {
        x
    }

    fn dequantize(self) -> Tensor<D> {
        self
    }

    fn apply<L: QuantOp<D>>(layer: &L, inputs: Vec<Self>) -> Self {
        layer.forward_float(inputs)
    }

    fn dropout(self, dropout: &Dropout) -> Self {
        dropout.forward(self)
    }
}

impl ImageBatch for Tensor<4> {
    type Flat = Tensor<2>;

    fn global_avg_pool_flatten(self) -> Tensor<2> {
        adaptive_avg_pool2d(self, [1, 1]).flatten(1, 3)
    }

    fn channel_shuffle(self, groups: usize) -> Tensor<4> {
        let [n, c, h, w] = self.dims();
        assert!(
            groups > 0 && c.is_multiple_of(groups),
            "channel_shuffle: {c} channels do not split into {groups} groups"
        );
        self.reshape([n, groups, c / groups, h, w])
            .swap_dims(1, 2)
            .reshape([n, c, h, w])
    }

    fn narrow_channels(self, start: usize, len: usize) -> Tensor<4> {
        self.narrow(1, start, len)
    }

    fn spatial_mean(self) -> Tensor<2> {
        self.mean_dim(3).mean_dim(2).flatten(1, 3)
    }
}

impl FeatureBatch for Tensor<2> {}
