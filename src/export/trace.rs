//! Export by tracing: [`OnnxBatch`] is a batch type ([`Batch`], [`ImageBatch`],
//! [`FeatureBatch`]) that computes nothing and writes each layer's ONNX nodes instead, so the
//! model's own forward, written once over the batch types, lays the graph out
//! ([`trace_onnx`]). The model needs no export code of its own.
//!
//! Every layer writes its own nodes ([`QuantOp::onnx`]). Node and tensor names are the layers'
//! module paths (`blocks.3.depthwise`), found by the address of the layer the forward hands
//! over in the model's read-only [`Quantizable`] walk; a layer the walk does not list cannot be
//! exported (an error names its kind).

use std::cell::RefCell;
use std::collections::HashMap;

use burn::nn::Dropout;
use burn::tensor::{Device, Tensor};

use super::onnx::{ExportKind, model_proto};
use crate::nn::layer::address_of;
use crate::nn::{Batch, DeQuantStub, FeatureBatch, ImageBatch, QuantOp, QuantStub, Quantizable};
use crate::onnx::proto::{DimensionValue, ModelProto};
use crate::onnx::{Act, Builder, INPUT_NAME};
use crate::{Error, Result};

/// A symbolic batch of rank `D`: the graph value that holds it, and its channel (rank 4) or
/// feature (rank 2) count where a layer fixed it. Only meaningful inside [`trace_onnx`].
#[derive(Debug, Clone)]
pub struct OnnxBatch<const D: usize> {
    value: Option<Act>,
    channels: Option<usize>,
}

/// The graph being recorded on this thread.
struct Trace {
    graph: Builder,
    /// Layer address → module path.
    layers: HashMap<usize, String>,
    /// The input's dims, set by the first `QuantStub`.
    input: Option<Vec<DimensionValue>>,
    /// The engine of a converted model's `QuantStub` (recorded in the model's metadata).
    engine: Option<&'static str>,
    pools: usize,
    /// Channel shuffles so far (each names its nodes `channel_shuffle`, `channel_shuffle_1`, …).
    shuffles: usize,
    /// Channel slices so far (`narrow`, `narrow_1`, …).
    narrows: usize,
    /// The first error: the forward cannot return one, so it is kept here.
    error: Option<Error>,
}

thread_local! {
    static TRACE: RefCell<Option<Trace>> = const { RefCell::new(None) };
}

impl<const D: usize> OnnxBatch<D> {
    fn failed() -> Self {
        OnnxBatch {
            value: None,
            channels: None,
        }
    }

    /// Runs `op` on the trace with this batch's value; an error (or an earlier one) leaves a
    /// failed batch and the first error in the trace.
    fn record<const E: usize>(
        inputs: &[&Self],
        op: impl FnOnce(&mut Trace, Vec<Act>) -> Result<(Act, Option<usize>)>,
    ) -> OnnxBatch<E> {
        TRACE.with_borrow_mut(|trace| {
            let Some(trace) = trace.as_mut() else {
                // Outside `trace_onnx` there is no graph to write to: nothing to record.
                return OnnxBatch::failed();
            };
            let values: Option<Vec<Act>> = inputs.iter().map(|b| b.value.clone()).collect();
            let (Some(values), None) = (values, &trace.error) else {
                return OnnxBatch::failed();
            };
            match op(trace, values) {
                Ok((value, channels)) => OnnxBatch {
                    value: Some(value),
                    channels,
                },
                Err(e) => {
                    trace.error = Some(e);
                    OnnxBatch::failed()
                }
            }
        })
    }
}

impl Trace {
    /// The module path of the `kind` layer at `addr`.
    fn path(&self, addr: usize, kind: &str) -> Result<String> {
        self.layers.get(&addr).cloned().ok_or_else(|| {
            Error::Quant(format!(
                "ONNX export: the forward runs a {kind} that the model's Quantizable walk does \
                 not list (add its field to impl_quantizable!)"
            ))
        })
    }
}

impl<const D: usize> Batch<D> for OnnxBatch<D> {
    type Float = OnnxBatch<D>;

    /// The graph's input (one per model), float.
    fn from_float(x: Tensor<D>) -> Self {
        let dims = x.dims();
        let channels = dims.get(1).copied();
        OnnxBatch::<D>::record(&[], |t, _| {
            if t.input.is_some() {
                return Err(Error::Quant(
                    "ONNX export: the forward takes a second input; one input is supported".into(),
                ));
            }
            t.input = Some(graph_dims(&dims, channels));
            Ok((Act::Float(INPUT_NAME.to_string()), channels))
        })
    }

    fn quantize_batch(stub: &QuantStub, x: Self) -> Self {
        let channels = x.channels;
        OnnxBatch::record(&[&x], |t, values| {
            let path = t.path(address_of(stub), "QuantStub")?;
            if let Some(out) = stub.int8 {
                t.engine.get_or_insert(out.engine.name());
            }
            Ok((stub.onnx(&mut t.graph, &path, &values[0])?, channels))
        })
    }

    fn dequantize_batch(stub: &DeQuantStub, x: Self) -> Self {
        let channels = x.channels;
        OnnxBatch::record(&[&x], |t, values| {
            let path = t.path(address_of(stub), "DeQuantStub")?;
            Ok((stub.onnx(&mut t.graph, &path, &values[0])?, channels))
        })
    }

    fn dequantize(self) -> OnnxBatch<D> {
        self
    }

    fn apply<L: QuantOp<D>>(layer: &L, inputs: Vec<Self>) -> Self {
        let channels: Vec<Option<usize>> = inputs.iter().map(|x| x.channels).collect();
        let inputs: Vec<&Self> = inputs.iter().collect();
        OnnxBatch::record(&inputs, |t, values| {
            let path = t.path(layer.layer_address(), layer.op_kind())?;
            let value = layer.onnx(&mut t.graph, &path, &values)?;
            Ok((value, layer.output_channels(&channels)))
        })
    }

    /// Identity at inference, as PyTorch exports it.
    fn dropout(self, _: &Dropout) -> Self {
        self
    }
}

impl ImageBatch for OnnxBatch<4> {
    type Flat = OnnxBatch<2>;

    fn global_avg_pool_flatten(self) -> OnnxBatch<2> {
        let channels = self.channels;
        OnnxBatch::record(&[&self], |t, values| {
            // The first pooling keeps the names of torchvision's modules (`avgpool`,
            // `flatten`); later ones are numbered.
            let suffix = match t.pools {
                0 => String::new(),
                n => format!("_{n}"),
            };
            t.pools += 1;
            let value = t.graph.pool_flatten(&values[0], &suffix)?;
            Ok((value, channels))
        })
    }

    fn channel_shuffle(self, groups: usize) -> OnnxBatch<4> {
        let channels = self.channels;
        OnnxBatch::record(&[&self], |t, values| {
            let name = numbered("channel_shuffle", &mut t.shuffles);
            let c = channels.ok_or_else(|| {
                Error::Quant(format!(
                    "ONNX export: `{name}` needs its input's channel count, which no layer fixed"
                ))
            })?;
            let value = t.graph.channel_shuffle(&values[0], c, groups, &name)?;
            Ok((value, channels))
        })
    }

    fn narrow_channels(self, start: usize, len: usize) -> OnnxBatch<4> {
        let channels = self.channels;
        OnnxBatch::record(&[&self], |t, values| {
            let name = numbered("narrow", &mut t.narrows);
            if let Some(c) = channels.filter(|&c| start.checked_add(len).is_none_or(|e| e > c)) {
                return Err(Error::Quant(format!(
                    "ONNX export: `{name}`: channels {start}..{start}+{len} are outside {c}"
                )));
            }
            let value = t.graph.narrow_channels(&values[0], start, len, &name)?;
            Ok((value, Some(len)))
        })
    }

    /// The float mean is the global average pooling; in the int8 form the pooled value is
    /// quantized with the input's qparams, as quantized `mean` keeps them.
    fn spatial_mean(self) -> OnnxBatch<2> {
        self.global_avg_pool_flatten()
    }
}

impl FeatureBatch for OnnxBatch<2> {}

/// `base` for the first node of its kind, then `base_1`, `base_2`, … (`count` counts them).
fn numbered(base: &str, count: &mut usize) -> String {
    let name = match *count {
        0 => base.to_string(),
        n => format!("{base}_{n}"),
    };
    *count += 1;
    name
}

/// The graph's dims for a batch of `example` dims: `batch` first, the channel (or feature)
/// count as it is, the spatial dims symbolic (`height`, `width` for images).
fn graph_dims(example: &[usize], channels: Option<usize>) -> Vec<DimensionValue> {
    let symbolic = |name: &str| DimensionValue::DimParam(name.to_string());
    (0..example.len())
        .map(|i| match (i, example.len(), channels) {
            (0, _, _) => symbolic("batch"),
            (1, _, Some(c)) => DimensionValue::DimValue(c as i64),
            (2, 4, _) => symbolic("height"),
            (3, 4, _) => symbolic("width"),
            _ => symbolic(&format!("dim{i}")),
        })
        .collect()
}

/// ONNX of `model` in `kind`'s form, laid out by running `forward` on [`OnnxBatch`]es: call
/// the model's own forward there with the batch type, as in
/// `trace_onnx(&model, kind, "my_net", [1, 3, 32, 32], |m, x| m.forward_as::<OnnxBatch<4>>(x))`.
///
/// `example_dims` gives the input's rank and channel count (the graph's batch and spatial dims
/// are symbolic, and the forward sees an example of size 1 in them); `name` names the graph. The int8 form needs a converted model (an error
/// names the first layer without an int8 form), the QDQ form a QAT-prepared one.
pub fn trace_onnx<M, const D: usize, const E: usize>(
    model: &M,
    kind: ExportKind,
    name: &str,
    example_dims: [usize; D],
    forward: impl FnOnce(&M, Tensor<D>) -> OnnxBatch<E>,
) -> Result<ModelProto>
where
    M: Quantizable,
{
    if kind == ExportKind::Int8 {
        crate::convert::check_converted(model).map_err(|e| match e {
            Error::Stage { path, problem } => Error::Quant(format!(
                "cannot export the int8 model to ONNX: `{path}` {problem}"
            )),
            other => other,
        })?;
    }
    if kind == ExportKind::FakeQuant && !crate::quantize::is_prepared(model) {
        return Err(Error::Quant(
            "ONNX QDQ export: no layer has a fake-quant (prepare_qat the model first, or export \
             it as float)"
                .into(),
        ));
    }
    let mut layers = HashMap::new();
    model.visit_layers_ref(&mut |path, layer| {
        layers.insert(address_of(layer), path.to_string());
        Ok(())
    })?;
    let trace = Trace {
        graph: Builder::new(kind),
        layers,
        input: None,
        engine: None,
        pools: 0,
        shuffles: 0,
        narrows: 0,
        error: None,
    };
    let previous = TRACE.replace(Some(trace));
    if previous.is_some() {
        TRACE.set(previous);
        return Err(Error::Quant(
            "ONNX export: trace_onnx called from inside a traced forward".into(),
        ));
    }
    // The forward only hands the example to its QuantStub, which reads its rank and channel
    // count: every other dim is 1, so a large `example_dims` allocates nothing large.
    let mut shape = [1usize; D];
    if D > 1 {
        shape[1] = example_dims[1];
    }
    crate::limits::check_fits(crate::limits::product(
        shape.iter().map(|&d| d as u64).chain([4]),
    ))
    .map_err(|e| Error::Config(format!("ONNX export: input channels {shape:?}: {e}")))?;
    let example = Tensor::<D>::zeros(shape, &Device::flex());
    let output = forward(model, example);
    let trace = TRACE.take().expect("the trace set above");
    if let Some(e) = trace.error {
        return Err(e);
    }
    let (Some(value), Some(input)) = (output.value, trace.input) else {
        return Err(Error::Quant(
            "ONNX export: the traced forward has no input; call the model's forward with \
             OnnxBatch as its batch type"
                .into(),
        ));
    };
    let mut graph = trace.graph;
    let output_name = graph.output(value)?;
    let output_dims = graph_dims(&[0; E], output.channels);
    let metadata = trace.engine.map(|engine| ("burn_qat.engine", engine));
    Ok(model_proto(
        graph,
        name,
        (input, &output_name, output_dims),
        metadata,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_dims_keep_the_channels_and_name_the_rest() {
        let dims = graph_dims(&[1, 3, 8, 8], Some(3));
        assert_eq!(
            dims,
            vec![
                DimensionValue::DimParam("batch".into()),
                DimensionValue::DimValue(3),
                DimensionValue::DimParam("height".into()),
                DimensionValue::DimParam("width".into()),
            ]
        );
        assert_eq!(
            graph_dims(&[0, 0], None),
            vec![
                DimensionValue::DimParam("batch".into()),
                DimensionValue::DimParam("dim1".into()),
            ]
        );
    }

    #[derive(burn::module::Module, Debug)]
    struct Stub {
        quant: QuantStub,
    }
    crate::impl_quantizable!(Stub { quant });

    #[test]
    fn an_absurd_channel_count_is_an_error_not_an_allocation() {
        let model = Stub {
            quant: QuantStub::new(),
        };
        let err = trace_onnx(
            &model,
            ExportKind::Float,
            "stub",
            [1, usize::MAX, 1, 1],
            |m, x| m.quant.forward::<OnnxBatch<4>, 4>(x),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("input channels")),
            "{err}"
        );
        // A float model that is only its stub has no node to name `logits`: an error, too.
        let proto = trace_onnx(&model, ExportKind::Float, "stub", [1, 3, 8, 8], |m, x| {
            m.quant.forward::<OnnxBatch<4>, 4>(x)
        });
        assert!(proto.is_err(), "a graph with no node has no output to name");
    }

    #[test]
    fn a_batch_outside_a_trace_records_nothing() {
        let x = OnnxBatch::<4> {
            value: Some(Act::Float("input".into())),
            channels: Some(3),
        };
        let y: OnnxBatch<4> = OnnxBatch::record(&[&x], |_, v| Ok((v[0].clone(), None)));
        assert!(y.value.is_none());
    }
}
