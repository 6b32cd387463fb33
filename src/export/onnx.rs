//! ONNX export (opset 13, IR version 7) of any model written against the batch types, traced
//! through its own forward ([`super::trace_onnx`]), in three forms ([`ExportKind`]):
//!
//! - **int8** ([`ExportKind::Int8`]): a converted model as a standard QDQ graph. Activations are
//!   uint8 with the converted layers' scales and zero-points; every `Conv` / `Gemm` reads
//!   `DequantizeLinear` outputs of its quantized input, of its int8 weight (per-tensor, or
//!   per-channel with `axis = 0`) and of its int32 bias (`round(b / (s_in·s_w))`, scale
//!   `s_in·s_w`, zero-point 0), and its output goes through `QuantizeLinear` with the layer's
//!   output qparams. A fused ReLU is the output quantization's lower bound (its zero-point is 0),
//!   so `DQ → Conv → Q` is one `QLinearConv` for onnxruntime; a ReLU layer with another
//!   zero-point keeps an explicit `Relu`. The residual add is `DQ(a), DQ(b) → Add → Q`, the
//!   average pooling `DQ → GlobalAveragePool → Q` with the input's qparams (as PyTorch's
//!   quantized adaptive average pooling keeps them), then `DQ → Flatten → Q`, the classifier
//!   `Gemm` (`transB = 1`, weight `[out, in]`), and a last `DequantizeLinear` gives `logits`.
//! - **float** ([`ExportKind::Float`]): the float network (`Conv`, `BatchNormalization` where
//!   the layer still has its batch norm, `Relu` / `Clip(0, 6)`, `Add`, `GlobalAveragePool`,
//!   `Flatten`, `Gemm`), ignoring observers and fake-quants.
//! - **QDQ** ([`ExportKind::FakeQuant`]): a QAT model (after `prepare_qat`) as float ONNX with a
//!   `QuantizeLinear → DequantizeLinear` pair for every fake-quant, with its current scale and
//!   zero-point (the ones the forward applies once observers are disabled): int8 weights with
//!   `DequantizeLinear` (a QAT conv + BN is exported with BN folded from its running statistics,
//!   which is exactly its eval forward), float biases, and a `Clip` on the quantized tensor
//!   where a fake-quant's range is narrower than its type's (`reduce_range`). Every fake-quant
//!   is exported, enabled or not: the graph is the model as it will be deployed.
//!
//! The graph's input is `input` (float32, e.g. `[batch, 3, height, width]` with the channel
//! count fixed and the rest symbolic) and its output `logits` (float32, e.g. `[batch,
//! num_classes]`). Tensor and node names follow the model's module paths
//! (`blocks.3.depthwise`).

use std::path::Path;

use prost::Message;

use crate::Result;
use crate::onnx::Builder;
use crate::onnx::proto::{
    DataType, DimensionValue, GraphProto, ModelProto, StringStringEntryProto, ValueInfoProto,
    onnx_opset,
};
pub use crate::onnx::{ExportKind, INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME};

/// Writes `proto` to `path` (atomic write: the old file or the complete new one, never half of
/// it).
pub fn save_onnx(proto: &ModelProto, path: &Path) -> Result<()> {
    let bytes = proto.encode_to_vec();
    crate::io::atomic::write_atomic(path, |f| std::io::Write::write_all(f, &bytes))
}

/// The `ModelProto` around a recorded graph: its input and output value infos (`input` dims,
/// output name and dims) and the model's metadata (the export form, and `extra`).
pub(super) fn model_proto(
    graph: Builder,
    name: &str,
    (input_dims, output, output_dims): (Vec<DimensionValue>, &str, Vec<DimensionValue>),
    extra: Option<(&str, &str)>,
) -> ModelProto {
    let kind = graph.kind;
    let mut metadata = vec![entry("burn_qat.kind", kind.name())];
    metadata.extend(extra.map(|(k, v)| entry(k, v)));
    let graph = GraphProto {
        node: graph.nodes,
        name: Some(format!("{name}_{}", kind.name())),
        initializer: graph.initializers,
        doc_string: None,
        input: vec![ValueInfoProto::tensor(
            INPUT_NAME,
            DataType::Float,
            input_dims,
        )],
        output: vec![ValueInfoProto::tensor(output, DataType::Float, output_dims)],
        value_info: vec![],
    };
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![onnx_opset(OPSET)],
        producer_name: Some("burn-qat".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(format!(
            "{name} ({} form) exported by burn-qat",
            kind.name()
        )),
        graph: Some(graph),
        metadata_props: metadata,
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    }
}
