//! [`QBatch`]: the activations of a converted (int8) model — quint8 tensors with their scale and
//! zero-point — and how each quantizable layer runs on them (`torch.ao.nn.quantized.*`).

use std::sync::Arc;

use burn::backend::Flex;
use burn::nn::Dropout;
use burn::tensor::{Device, Tensor, TensorData};

use super::batch::{Batch, FeatureBatch, ImageBatch};
use super::layer::QuantOp;
use super::stubs::{DeQuantStub, QuantStub};
use crate::error::StageProblem;
use crate::int8::narrow::narrow_channels;
use crate::int8::shuffle::channel_shuffle;
use crate::int8::{
    Engine, PoolInputLayout, QParamsPt, QTensor, adaptive_avg_pool2d_1x1, spatial_mean,
};
use crate::quant::observer::tensor_to_vec;
use crate::{Error, Result};

/// What `convert` gives a `QuantStub` or a `FloatFunctional`: its output scale and zero-point
/// (`torch.ao.nn.quantized.Quantize` / `QFunctional`) and the engine whose arithmetic to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizedOutput {
    /// Output scale and zero-point.
    pub qparams: QParamsPt,
    /// The engine of the converted model.
    pub engine: Engine,
}

/// A quint8 tensor between the layers of a converted model, with what the next op needs to
/// reproduce PyTorch: the engine, and whether PyTorch would hold it channels-last (quantized
/// convolutions return channels-last tensors, which changes the rounding of average pooling).
#[derive(Debug)]
struct QState {
    tensor: QTensor,
    engine: Engine,
    layout: PoolInputLayout,
    device: Device,
}

/// A batch of int8 activations of rank `D`, or the error of the op that could not make it (an
/// int8 forward hands its first error back at the `DeQuantStub`, so a model's forward needs no
/// `?`). Between a `DeQuantStub` and a `QuantStub` inside the model, through layers kept in
/// float, it holds a float tensor. Cloning is cheap (shared).
#[derive(Debug, Clone)]
pub struct QBatch<const D: usize>(Flow<D>);

#[derive(Debug, Clone)]
enum Flow<const D: usize> {
    Int8(Arc<QState>),
    /// Boxed: a tensor handle is several times the size of the other variants.
    Float(Box<Tensor<D>>),
    Failed(Arc<Error>),
}

impl<const D: usize> QBatch<D> {
    fn ok(tensor: QTensor, engine: Engine, layout: PoolInputLayout, device: Device) -> Self {
        QBatch(Flow::Int8(Arc::new(QState {
            tensor,
            engine,
            layout,
            device,
        })))
    }

    fn fail(error: Error) -> Self {
        QBatch(Flow::Failed(Arc::new(error)))
    }

    /// An int8 batch holding `tensor`, to run with `engine`'s arithmetic, that PyTorch would
    /// hold in `layout` (a quantized conv's output is channels-last; `.contiguous()`'s NCHW):
    /// for running a layer on int8 tensors of your own, e.g. PyTorch's.
    pub fn from_qtensor(
        tensor: QTensor,
        engine: Engine,
        layout: PoolInputLayout,
        device: &Device,
    ) -> Self {
        QBatch::ok(tensor, engine, layout, device.clone())
    }

    /// The quint8 tensor, or the error that stopped the forward (or says the batch is float
    /// here).
    pub fn tensor(&self) -> Result<&QTensor> {
        match &self.0 {
            Flow::Int8(state) => Ok(&state.tensor),
            Flow::Float(_) => Err(Error::Quant(
                "the batch is float here (after a DeQuantStub): no int8 tensor".into(),
            )),
            Flow::Failed(e) => Err(shared_error(e)),
        }
    }

    /// Runs `op` on the int8 state, or `float` on a float batch, or passes an earlier error on.
    fn then<const E: usize>(
        self,
        op: impl FnOnce(&QState) -> Result<QBatch<E>>,
        float: impl FnOnce(Tensor<D>) -> Tensor<E>,
    ) -> QBatch<E> {
        match self.0 {
            Flow::Int8(state) => op(&state).unwrap_or_else(QBatch::fail),
            Flow::Float(x) => QBatch(Flow::Float(Box::new(float(*x)))),
            Flow::Failed(e) => QBatch(Flow::Failed(e)),
        }
    }
}

/// The error a failed batch carries, once more (an `Error` cannot be cloned: its I/O source
/// cannot): the same variant for those that hold only a message, so that the message is not
/// prefixed a second time ("quantization error: quantization error: ...").
fn shared_error(e: &Arc<Error>) -> Error {
    match &**e {
        Error::Quant(m) => Error::Quant(m.clone()),
        Error::Shape(m) => Error::Shape(m.clone()),
        Error::Config(m) => Error::Config(m.clone()),
        Error::Stage { path, problem } => Error::Stage {
            path: path.clone(),
            problem: problem.clone(),
        },
        other => Error::Quant(other.to_string()),
    }
}

/// `f` of `x`'s f32 values in row-major order: borrowed from a contiguous flex tensor (a
/// model's input is usually shared with its caller, so `into_data` would copy it, twice: a
/// serial pass over 19 MB at batch 32), else read back.
fn with_values<const D: usize, R>(x: Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    if let Ok(t) = x.clone().try_into_primitive::<Flex>()
        && let Some(values) = t.as_slice::<f32>()
    {
        return f(values);
    }
    f(&tensor_to_vec(x))
}

fn output_of(q: Option<&QuantizedOutput>) -> Result<QuantizedOutput> {
    q.copied().ok_or(Error::stage(StageProblem::NotConverted))
}

impl<const D: usize> Batch<D> for QBatch<D> {
    type Float = Result<Tensor<D>>;

    fn from_float(x: Tensor<D>) -> Self {
        QBatch(Flow::Float(Box::new(x)))
    }

    /// `torch.quantize_per_tensor(x, scale, zero_point, quint8)` with the stub's qparams.
    fn quantize_batch(stub: &QuantStub, x: Self) -> Self {
        let x = match x.0 {
            Flow::Float(x) => *x,
            Flow::Int8(_) => {
                return QBatch::fail(Error::Quant(
                    "a QuantStub got an int8 batch: the batch is quantized already".into(),
                ));
            }
            failed => return QBatch(failed),
        };
        let run = || -> Result<Self> {
            let out = output_of(stub.int8.as_ref())?;
            let device = x.device();
            let shape = x.dims();
            let q = with_values(x, |v| QTensor::quantize(v, &shape, out.qparams))?;
            Ok(QBatch::ok(
                q,
                out.engine,
                PoolInputLayout::Contiguous,
                device,
            ))
        };
        run().unwrap_or_else(|e| QBatch::fail(e.at_layer("QuantStub")))
    }

    fn dequantize_batch(_: &DeQuantStub, x: Self) -> Self {
        match x.dequantize() {
            Ok(x) => QBatch(Flow::Float(Box::new(x))),
            Err(e) => QBatch::fail(e),
        }
    }

    fn dequantize(self) -> Result<Tensor<D>> {
        let state = match self.0 {
            Flow::Int8(state) => state,
            Flow::Float(x) => return Ok(*x),
            Flow::Failed(e) => return Err(shared_error(&e)),
        };
        let shape: [usize; D] = state.tensor.shape().try_into().map_err(|_| {
            Error::Shape(format!(
                "dequantize: a rank-{D} batch holds a tensor of shape {:?}",
                state.tensor.shape()
            ))
        })?;
        let data = TensorData::new(state.tensor.dequantize(), shape);
        Ok(Tensor::from_data(data, &state.device))
    }

    /// The layer's int8 forward on int8 batches, its float forward on float ones (a layer
    /// kept in float, between a `DeQuantStub` and a `QuantStub`).
    fn apply<L: QuantOp<D>>(layer: &L, inputs: Vec<Self>) -> Self {
        let mut states = Vec::with_capacity(inputs.len());
        let mut floats = Vec::new();
        for input in inputs {
            match input.0 {
                Flow::Int8(state) => states.push(state),
                Flow::Float(x) => floats.push(*x),
                failed @ Flow::Failed(_) => return QBatch(failed),
            }
        }
        match (states.is_empty(), floats.is_empty()) {
            (true, false) => return QBatch(Flow::Float(Box::new(layer.forward_float(floats)))),
            (false, false) => {
                return QBatch::fail(Error::Quant(format!(
                    "a {} got int8 and float inputs: put a QuantStub on the float one",
                    layer.op_kind()
                )));
            }
            _ => {}
        }
        let Some(first) = states.first() else {
            return QBatch::fail(Error::Quant(format!("a {} got no input", layer.op_kind())));
        };
        let tensors: Vec<&QTensor> = states.iter().map(|s| &s.tensor).collect();
        let layouts: Vec<PoolInputLayout> = states.iter().map(|s| s.layout).collect();
        // The inputs' common memory format (quantized cat's fast path needs every input
        // channels-last); NCHW where they differ.
        let layout = match layouts.iter().all(|&l| l == first.layout) {
            true => first.layout,
            false => PoolInputLayout::Contiguous,
        };
        match layer.forward_int8_in(&tensors, first.engine, layout) {
            Ok(y) => QBatch::ok(
                y,
                first.engine,
                layer.int8_output_layout(&tensors, &layouts),
                first.device.clone(),
            ),
            // The batch does not know the layer's path: name its kind.
            Err(e) => QBatch::fail(e.at_layer(layer.op_kind())),
        }
    }

    /// `nn.Dropout` is the identity at inference, and PyTorch's convert keeps it as such.
    fn dropout(self, _: &Dropout) -> Self {
        self
    }
}

impl ImageBatch for QBatch<4> {
    type Flat = QBatch<2>;

    fn global_avg_pool_flatten(self) -> QBatch<2> {
        self.then(
            |x| {
                let pooled = adaptive_avg_pool2d_1x1(&x.tensor, x.engine, x.layout)?;
                let shape = [pooled.shape()[0], pooled.shape()[1]];
                let qparams = pooled.qparams();
                let flat = QTensor::from_raw(pooled.into_data(), &shape, qparams)?;
                Ok(QBatch::ok(flat, x.engine, x.layout, x.device.clone()))
            },
            |x| x.global_avg_pool_flatten(),
        )
    }

    /// NCHW-contiguous output, as `.contiguous()` leaves it in PyTorch.
    fn channel_shuffle(self, groups: usize) -> QBatch<4> {
        self.then(
            |x| {
                let y = channel_shuffle(&x.tensor, groups)?;
                Ok(QBatch::ok(
                    y,
                    x.engine,
                    PoolInputLayout::Contiguous,
                    x.device.clone(),
                ))
            },
            |x| x.channel_shuffle(groups),
        )
    }

    /// The slice is channels-last for PyTorch only where every other dim is 1 (`[1, c, 1, 1]`
    /// is contiguous in both formats), and NCHW otherwise: a view into a wider tensor is not
    /// channels-last-contiguous, which sends quantized `cat` down its general path.
    fn narrow_channels(self, start: usize, len: usize) -> QBatch<4> {
        self.then(
            |x| {
                let y = narrow_channels(&x.tensor, start, len)?;
                let layout = match y.shape() {
                    _ if len == x.tensor.shape()[1] => x.layout,
                    [1, _, 1, 1] => PoolInputLayout::ChannelsLast,
                    _ => PoolInputLayout::Contiguous,
                };
                Ok(QBatch::ok(y, x.engine, layout, x.device.clone()))
            },
            |x| x.narrow_channels(start, len),
        )
    }

    fn spatial_mean(self) -> QBatch<2> {
        self.then(
            |x| {
                let y = spatial_mean(&x.tensor, x.engine, x.layout)?;
                Ok(QBatch::ok(
                    y,
                    x.engine,
                    PoolInputLayout::Contiguous,
                    x.device.clone(),
                ))
            },
            |x| x.spatial_mean(),
        )
    }
}

impl FeatureBatch for QBatch<2> {}
