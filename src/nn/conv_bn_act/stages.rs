//! [`ConvBnAct`] at each stage: fusion (`fuse_modules` folds its batch norm), `prepare`,
//! `convert` (`nniq.ConvReLU2d.from_float` / `nnq.Conv2d.from_float`), its int8 forward and
//! state-dict entries (`weight`, `bias`, `scale`, `zero_point`), and its ONNX nodes.

use std::sync::Arc;

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::tensor::{Tensor, TensorData};

use super::ConvBnAct;
use crate::error::StageProblem;
use crate::int8::{Conv2dSpec, Engine, Int8Conv2d, PoolInputLayout, QParamsPt, QTensor, QWeight};
use crate::nn::activation::Activation;
use crate::nn::batch_norm::BatchNorm2d;
use crate::nn::bn_folding::fold_bn_into_conv;
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
use crate::onnx::{Act, Builder, ExportKind, OnnxActivation};
use crate::quant::observer::tensor_to_vec;
use crate::{Error, Result};

impl ConvBnAct {
    /// The geometry and fused ReLU of the int8 convolution; errors for what the int8 kernels
    /// do not run (unequal strides, dilation, uneven padding).
    pub fn int8_spec(&self) -> Result<Conv2dSpec> {
        let conv = &self.conv;
        let unsupported = |m: &str| Error::stage(StageProblem::Unsupported(m.into()));
        if conv.stride[0] != conv.stride[1] || conv.dilation != [1, 1] {
            return Err(unsupported(
                "int8 convolutions need equal strides and no dilation",
            ));
        }
        let padding = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
            PaddingConfig2d::Valid => 0,
            _ => {
                return Err(unsupported(
                    "int8 convolutions need the same explicit padding on every side",
                ));
            }
        };
        Ok(Conv2dSpec {
            stride: conv.stride[0],
            padding,
            groups: conv.groups,
            relu: self.activation == Activation::Relu,
        })
    }

    /// The int8 convolution of this fused and prepared layer (`nniq.ConvReLU2d.from_float` /
    /// `nnq.Conv2d.from_float`), reading `input` qparams from the layer before it:
    ///
    /// 1. a QAT layer with batch norm folds the running statistics into the weight and bias
    ///    (`fuse_conv_bn_weights`);
    /// 2. the weight fake-quant sees the folded weight once more (its observer updates, as
    ///    PyTorch's `weight_post_process(mod.weight)` does) and gives the weight qparams;
    /// 3. the weight is quantized to qint8 with them; the output observer gives the output
    ///    qparams.
    ///
    /// Errors name what is missing: no observer (not prepared), no weight fake-quant, an
    /// unobserved output.
    pub fn to_int8(&self, input: QParamsPt, engine: Engine) -> Result<Int8Conv2d> {
        let (wfq, _) = prepared_parts(
            &self.weight_fake_quant,
            &self.activation_post_process,
            "convolution",
        )?;
        let weight = self.conv.weight.val();
        let out = self.out_channels();
        let bias = self.conv.bias.as_ref().map(Param::val);
        let (weight, bias) = match (&self.bn, self.fusion) {
            (Some(bn), Fusion::Qat) => {
                // fuse_conv_bn_weights: w·(γ·rsqrt(σ²+ε)), (b − μ)·rsqrt(σ²+ε)·γ + β.
                let rsqrt = bn.running_var().add_scalar(bn.eps).sqrt().recip();
                let factor = bn.weight.val() * rsqrt.clone();
                let w = weight * factor.clone().reshape([-1, 1, 1, 1]);
                let b = bias.unwrap_or_else(|| Tensor::zeros([out], &w.device()));
                let b = (b - bn.running_mean()) * rsqrt * bn.weight.val() + bn.bias.val();
                (w, Some(b))
            }
            (Some(_), _) => {
                return Err(Error::stage(StageProblem::Unsupported(
                    "convert needs conv + batch norm fused (fuse_model) before prepare".into(),
                )));
            }
            (None, _) => (weight, bias),
        };
        let qweight = quantize_weight(wfq, weight)?;
        let output = single_qparams(self.activation_post_process.calculate_qparams()?)?;
        let spec = self.int8_spec()?;
        Int8Conv2d::new(
            qweight,
            bias.map(tensor_to_vec),
            spec,
            input,
            output,
            engine,
        )
    }
}

impl WeightedLayer for ConvBnAct {
    fn kind(&self) -> &'static str {
        "ConvBnAct"
    }

    fn weighted(&mut self) -> Weighted<'_> {
        Weighted {
            kind: "convolution",
            out_channels: self.out_channels(),
            device: self.conv.weight.device(),
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
        self.conv = fold_bn_into_conv(&self.conv, bn);
    }

    fn convert_weights(&mut self, input: QParamsPt, engine: Engine) -> Result<()> {
        self.int8 = Some(Arc::new(self.to_int8(input, engine)?));
        Ok(())
    }

    fn int8_weights(&self) -> Option<(&QWeight, Option<&[f32]>, QuantizedOutput)> {
        self.int8.as_ref().map(|c| {
            let output = QuantizedOutput {
                qparams: c.output_qparams(),
                engine: c.engine(),
            };
            (c.weight(), c.bias(), output)
        })
    }

    fn int8_weight_shape(&self) -> Vec<usize> {
        self.weight_shape().to_vec()
    }

    fn has_batch_norm(&self) -> bool {
        self.bn.is_some()
    }

    fn float_weights(&self) -> (Vec<f32>, Option<Vec<f32>>) {
        let bias = self.conv.bias.as_ref().map(|b| tensor_to_vec(b.val()));
        (tensor_to_vec(self.conv.weight.val()), bias)
    }

    fn install_float(&mut self, weight: Vec<f32>, bias: Option<Vec<f32>>) -> Result<()> {
        let device = self.conv.weight.device();
        let shape = self.weight_shape();
        let weight = Tensor::from_data(TensorData::new(weight, shape), &device);
        self.conv.weight = Param::from_tensor(weight);
        self.conv.bias = bias.map(|b| {
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
        ConvBnAct::is_stripped(self)
    }

    fn free_float_weights(&mut self) -> bool {
        let device = self.conv.weight.device();
        self.conv.weight = Param::from_tensor(Tensor::empty([0, 0, 0, 0], &device));
        self.conv.bias = None;
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
        let mut spec = self.int8_spec()?;
        spec.relu = fused_relu(self.activation)?;
        let conv = Int8Conv2d::new(weight, bias, spec, input, output, engine)?;
        self.int8 = Some(Arc::new(conv));
        Ok(())
    }
}

impl QuantOp<4> for ConvBnAct {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "ConvBnAct"
    }

    fn forward_float(&self, mut inputs: Vec<Tensor<4>>) -> Tensor<4> {
        self.forward_float(inputs.remove(0))
    }

    fn forward_int8(&self, inputs: &[&QTensor]) -> Result<QTensor> {
        let conv = self
            .int8
            .as_ref()
            .ok_or(Error::stage(StageProblem::NotConverted))?;
        conv.forward(inputs[0])
    }

    fn int8_layout(&self, _: PoolInputLayout) -> PoolInputLayout {
        PoolInputLayout::ChannelsLast
    }

    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> Result<Act> {
        let spec = self.int8_spec()?;
        let prepared = self.activation_post_process.observer().is_some();
        let converted = self.int8.is_some();
        let parts = match export_form(graph, path, prepared, converted, self.is_stripped())? {
            ExportKind::Int8 => {
                let int8 = self
                    .int8
                    .as_ref()
                    .ok_or_else(|| crate::onnx::graph::not_converted(path))?;
                let output = graph.int8_output(path, int8.output_qparams())?;
                let activation = match int8.spec().relu {
                    true => OnnxActivation::Relu,
                    false => OnnxActivation::Identity,
                };
                int8_parts(int8.weight(), int8.bias(), activation, output)
            }
            ExportKind::Float => float_parts(
                self.conv.weight.dims().to_vec(),
                tensor_to_vec(self.conv.weight.val()),
                self.conv.bias.as_ref().map(|b| tensor_to_vec(b.val())),
                self.bn.as_ref().map(bn_params),
                onnx_activation(self.activation),
            ),
            ExportKind::FakeQuant => {
                let output = self.activation_post_process.onnx_output(graph, path)?;
                let qat = QatWeights {
                    weight_fake_quant: self.weight_fake_quant.as_ref(),
                    weight: self.conv.weight.val(),
                    bias: self.conv.bias.as_ref().map(Param::val),
                    bn: self.bn.as_ref(),
                    fusion: self.fusion,
                    activation: self.activation,
                };
                qat.parts(path, output)?
            }
        };
        let kernel: Vec<i64> = parts.shape[2..].iter().map(|&k| k as i64).collect();
        let (s, p) = (spec.stride as i64, spec.padding as i64);
        let attrs = vec![
            AttributeProto::ints("dilations", &[1, 1]),
            AttributeProto::int("group", spec.groups as i64),
            AttributeProto::ints("kernel_shape", &kernel),
            AttributeProto::ints("pads", &[p, p, p, p]),
            AttributeProto::ints("strides", &[s, s]),
        ];
        graph.weighted_layer("Conv", path, &inputs[0], parts, attrs)
    }

    fn output_channels(&self, _: &[Option<usize>]) -> Option<usize> {
        Some(self.out_channels())
    }
}
