//! [`LinearBnAct`] at each stage: fusion (`fuse_modules` folds its batch norm), `prepare`,
//! `convert` (`nnq.Linear.from_float` / `nniq.LinearReLU.from_float`), its int8 forward and
//! state-dict entries (`weight`, `bias`, `scale`, `zero_point`), and its ONNX `Gemm`.

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};

use super::LinearBnAct;
use crate::error::StageProblem;
use crate::int8::{Engine, Int8Linear, QParamsPt, QTensor, QWeight};
use crate::nn::activation::Activation;
use crate::nn::batch_norm::BatchNorm2d;
use crate::nn::bn_folding::fold_bn_into_linear;
use crate::nn::layer::{QuantOp, address_of};
use crate::nn::post_process::{ActivationPostProcess, PostProcess, single_qparams};
use crate::nn::qbatch::QuantizedOutput;
use crate::nn::stage::Fusion;
use crate::nn::weighted::{
    QatWeights, Weighted, WeightedLayer, bn_params, export_form, fused_relu, onnx_activation,
    prepared_parts, quantize_weight,
};
use crate::onnx::parts::{float_parts, int8_parts};
use crate::onnx::proto::AttributeProto;
use crate::onnx::{Act, Builder, ExportKind};
use crate::quant::observer::tensor_to_vec;
use crate::{Error, Result};

impl LinearBnAct {
    /// The int8 linear layer of this prepared layer without batch norm
    /// (`nnq.Linear.from_float` / `nniq.LinearReLU.from_float`), reading `input` qparams from
    /// the layer before it.
    pub fn to_int8(&self, input: QParamsPt, engine: Engine) -> Result<Int8Linear> {
        let (wfq, _) = prepared_parts(
            &self.weight_fake_quant,
            &self.activation_post_process,
            "linear layer",
        )?;
        if self.bn.is_some() {
            return Err(Error::stage(StageProblem::Unsupported(
                "converting linear + batch norm (LinearBn1d) is not supported yet".into(),
            )));
        }
        // Burn stores [in, out]; PyTorch's (and the int8 kernels') layout is [out, in].
        let qweight = quantize_weight(wfq, self.linear.weight.val().transpose())?;
        let output = single_qparams(self.activation_post_process.calculate_qparams()?)?;
        let bias = self.linear.bias.as_ref().map(|b| tensor_to_vec(b.val()));
        let relu = self.activation == Activation::Relu;
        Int8Linear::new(qweight, bias, relu, input, output, engine)
    }
}

impl WeightedLayer for LinearBnAct {
    fn kind(&self) -> &'static str {
        "LinearBnAct"
    }

    fn weighted(&mut self) -> Weighted<'_> {
        Weighted {
            kind: "linear layer",
            out_channels: self.out_features(),
            device: self.linear.weight.device(),
            fusion: &mut self.fusion,
            bn: &mut self.bn,
            weight_fake_quant: &mut self.weight_fake_quant,
            post: &mut self.activation_post_process,
            activation: &mut self.activation,
        }
    }

    fn output_post_process(&self) -> &ActivationPostProcess {
        &self.activation_post_process
    }

    fn fold_bn(&mut self, bn: &BatchNorm2d) {
        self.linear = fold_bn_into_linear(&self.linear, bn);
    }

    fn convert_weights(&mut self, input: QParamsPt, engine: Engine) -> Result<()> {
        self.int8 = Some(Arc::new(self.to_int8(input, engine)?));
        Ok(())
    }

    fn int8_weights(&self) -> Option<(&QWeight, Option<&[f32]>, QuantizedOutput)> {
        self.int8.as_ref().map(|l| {
            let output = QuantizedOutput {
                qparams: l.output_qparams(),
                engine: l.engine(),
            };
            (l.weight(), l.bias(), output)
        })
    }

    /// PyTorch's `[out, in]` (Burn stores `[in, out]`).
    fn int8_weight_shape(&self) -> Vec<usize> {
        self.weight_shape().to_vec()
    }

    fn has_batch_norm(&self) -> bool {
        self.bn.is_some()
    }

    fn float_weights(&self) -> (Vec<f32>, Option<Vec<f32>>) {
        let bias = self.linear.bias.as_ref().map(|b| tensor_to_vec(b.val()));
        (tensor_to_vec(self.linear.weight.val().transpose()), bias)
    }

    /// `weight` in PyTorch's `[out, in]`.
    fn install_float(&mut self, weight: Vec<f32>, bias: Option<Vec<f32>>) -> Result<()> {
        let device = self.linear.weight.device();
        let [outputs, inputs] = self.weight_shape();
        // Burn's `[in, out]`, laid out contiguously as a trained weight is (a transposed view
        // would change the matrix product's summation order, and its last bits).
        let weight: Vec<f32> = (0..inputs * outputs)
            .map(|i| weight[(i % outputs) * inputs + i / outputs])
            .collect();
        let weight = Tensor::<2>::from_data(TensorData::new(weight, [inputs, outputs]), &device);
        self.linear.weight = Param::from_tensor(weight);
        self.linear.bias = bias.map(|b| {
            let n = b.len();
            Param::from_tensor(Tensor::from_data(TensorData::new(b, [n]), &device))
        });
        self.bn = None;
        self.fusion = Fusion::Eval;
        // Kept in float: no int8 form (one converted before would still run).
        self.int8 = None;
        Ok(())
    }

    fn is_stripped(&self) -> bool {
        LinearBnAct::is_stripped(self)
    }

    fn free_float_weights(&mut self) -> bool {
        let device = self.linear.weight.device();
        self.linear.weight = Param::from_tensor(Tensor::empty([0, 0], &device));
        self.linear.bias = None;
        true
    }

    fn install_int8(
        &mut self,
        weight: QWeight,
        bias: Option<Vec<f32>>,
        input: QParamsPt,
        output: QParamsPt,
        engine: Engine,
    ) -> Result<()> {
        let relu = fused_relu(self.activation)?;
        let linear = Int8Linear::new(weight, bias, relu, input, output, engine)?;
        self.int8 = Some(Arc::new(linear));
        Ok(())
    }
}

impl QuantOp<2> for LinearBnAct {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "LinearBnAct"
    }

    fn forward_float(&self, mut inputs: Vec<Tensor<2>>) -> Tensor<2> {
        self.forward_float(inputs.remove(0))
    }

    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        let linear = self
            .int8
            .as_ref()
            .ok_or(Error::stage(StageProblem::NotConverted))?;
        linear.forward(inputs[0])
    }

    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        // Burn stores [in, out]; Gemm with transB reads [out, in].
        let weight_t = || self.linear.weight.val().transpose();
        let prepared = self.activation_post_process.observer().is_some();
        let converted = self.int8.is_some();
        let parts = match export_form(graph, path, prepared, converted, self.is_stripped())? {
            ExportKind::Int8 => {
                let int8 = self
                    .int8
                    .as_ref()
                    .ok_or_else(|| crate::onnx::graph::not_converted(path))?;
                let output = graph.int8_output(path, int8.output_qparams())?;
                let activation = onnx_activation(self.activation);
                int8_parts(int8.weight(), int8.bias(), activation, output)
            }
            ExportKind::Float => float_parts(
                weight_t().dims().to_vec(),
                tensor_to_vec(weight_t()),
                self.linear.bias.as_ref().map(|b| tensor_to_vec(b.val())),
                self.bn.as_ref().map(bn_params),
                onnx_activation(self.activation),
            ),
            ExportKind::FakeQuant => {
                let output = self.activation_post_process.onnx_output(graph, path)?;
                let qat = QatWeights {
                    weight_fake_quant: self.weight_fake_quant.as_ref(),
                    weight: weight_t(),
                    bias: self.linear.bias.as_ref().map(Param::val),
                    bn: self.bn.as_ref(),
                    fusion: self.fusion,
                    activation: self.activation,
                };
                qat.parts(path, output)?
            }
        };
        let attrs = vec![AttributeProto::int("transB", 1)];
        graph.weighted_layer("Gemm", path, &inputs[0], parts, attrs)
    }

    fn output_channels(&self, _: &[Option<usize>]) -> Option<usize> {
        Some(self.out_features())
    }
}
