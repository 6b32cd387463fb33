//! The state dict of a converted (int8) model, named and laid out as PyTorch's converted modules
//! name theirs: for a layer at path `p`, `p.weight` (qint8, per-tensor or per-channel), `p.bias`
//! (float), `p.scale` / `p.zero_point` (output qparams); a `QuantStub` or `FloatFunctional` has
//! only `p.scale` / `p.zero_point`. Paths are the model's module paths (`blocks.3.depthwise`);
//! torchvision's names are mapped onto them by [`crate::models::torchvision`].
//!
//! [`int8_state_dict`] reads it off a converted model; [`load_int8_state_dict`] gives an
//! unconverted model of the same architecture its int8 form from one (strict: missing,
//! unexpected and mis-shaped entries are errors naming the entry).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{QScheme, StateValue};
use crate::convert::{Int8Part, conv_spec, install_int8};
use crate::int8::{Engine, Int8Conv2d, Int8Linear, QParamsPt, QWeight, WeightQParams};
use crate::nn::{Activation, QuantLayer, Quantizable, QuantizedOutput};
use crate::{Error, Result};

/// A state dict: entry name → value.
pub type StateDict = BTreeMap<String, StateValue>;

fn scalar_f32(v: f32) -> StateValue {
    StateValue::Float {
        shape: vec![],
        data: vec![v],
    }
}

fn scalar_i64(v: i64) -> StateValue {
    StateValue::Int {
        shape: vec![],
        data: vec![v],
    }
}

fn weight_value(w: &QWeight) -> StateValue {
    let qscheme = match w.qparams() {
        WeightQParams::PerTensor { scale, zero_point } => QScheme::PerTensorAffine {
            scale: *scale as f64,
            zero_point: *zero_point as i64,
        },
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => QScheme::PerChannelAffine {
            scales: scales.iter().map(|&s| s as f64).collect(),
            zero_points: zero_points.iter().map(|&z| z as i64).collect(),
            axis: 0,
        },
    };
    StateValue::QInt8 {
        shape: w.shape().to_vec(),
        data: w.data().to_vec(),
        qscheme,
    }
}

fn put_output(state: &mut StateDict, name: &str, qp: QParamsPt) {
    state.insert(format!("{name}.scale"), scalar_f32(qp.scale));
    state.insert(
        format!("{name}.zero_point"),
        scalar_i64(qp.zero_point as i64),
    );
}

fn put_layer(state: &mut StateDict, name: &str, w: &QWeight, bias: Option<&[f32]>) {
    state.insert(format!("{name}.weight"), weight_value(w));
    if let Some(b) = bias {
        state.insert(
            format!("{name}.bias"),
            StateValue::Float {
                shape: vec![b.len()],
                data: b.to_vec(),
            },
        );
    }
}

/// The state dict of a converted model. Errors if a layer has no int8 form.
pub fn int8_state_dict<M: Quantizable>(model: &mut M) -> Result<StateDict> {
    crate::convert::check_converted(model)?;
    let mut state = StateDict::new();
    model.visit_layers(&mut |name, layer| {
        match layer {
            QuantLayer::Conv(c) => {
                if let Some(int8) = &c.int8 {
                    put_layer(&mut state, name, int8.weight(), int8.bias());
                    put_output(&mut state, name, int8.output_qparams());
                }
            }
            QuantLayer::Linear(l) => {
                if let Some(int8) = &l.int8 {
                    put_layer(&mut state, name, int8.weight(), int8.bias());
                    put_output(&mut state, name, int8.output_qparams());
                }
            }
            QuantLayer::Quant(stub) => {
                if let Some(out) = stub.int8 {
                    put_output(&mut state, name, out.qparams);
                }
            }
            QuantLayer::Functional(f) => {
                if let Some(out) = f.int8 {
                    put_output(&mut state, name, out.qparams);
                }
            }
        }
        Ok(())
    })?;
    Ok(state)
}

/// Reads entries out of a state dict, naming the entry in every error.
struct Reader<'a> {
    state: &'a StateDict,
}

impl<'a> Reader<'a> {
    fn get(&self, key: &str) -> Option<&'a StateValue> {
        self.state.get(key)
    }

    fn require(&self, key: &str) -> Result<&'a StateValue> {
        self.get(key)
            .ok_or_else(|| Error::mismatch(format!("the int8 checkpoint has no `{key}`")))
    }

    fn output(&self, name: &str) -> Result<QParamsPt> {
        let scale_key = format!("{name}.scale");
        let zp_key = format!("{name}.zero_point");
        let scale = match self.require(&scale_key)? {
            StateValue::Float { data, .. } if data.len() == 1 => data[0],
            other => return Err(bad_entry(&scale_key, "a one-element float tensor", other)),
        };
        let zero_point = match self.require(&zp_key)? {
            StateValue::Int { data, .. } if data.len() == 1 => data[0],
            other => return Err(bad_entry(&zp_key, "a one-element integer tensor", other)),
        };
        let zero_point = i32::try_from(zero_point)
            .ok()
            .filter(|z| (0..=255).contains(z))
            .ok_or_else(|| {
                Error::mismatch(format!(
                    "`{zp_key}` is {zero_point}, outside quint8's [0, 255]"
                ))
            })?;
        QParamsPt::new(scale, zero_point)
            .map_err(|e| Error::mismatch(format!("`{scale_key}`: {e}")))
    }

    fn weight(&self, name: &str, expected: &[usize]) -> Result<QWeight> {
        let key = format!("{name}.weight");
        let (shape, data, qscheme) = match self.require(&key)? {
            StateValue::QInt8 {
                shape,
                data,
                qscheme,
            } => (shape, data, qscheme),
            other => return Err(bad_entry(&key, "a qint8 tensor", other)),
        };
        if shape.as_slice() != expected {
            return Err(Error::mismatch(format!(
                "`{key}` has shape {shape:?} in the checkpoint but the model expects {expected:?}"
            )));
        }
        let qparams = match qscheme {
            QScheme::PerTensorAffine { scale, zero_point } => WeightQParams::PerTensor {
                scale: *scale as f32,
                zero_point: *zero_point as i32,
            },
            QScheme::PerChannelAffine {
                scales,
                zero_points,
                axis: 0,
            } => WeightQParams::PerChannel {
                scales: scales.iter().map(|&s| s as f32).collect(),
                zero_points: zero_points.iter().map(|&z| z as i32).collect(),
            },
            QScheme::PerChannelAffine { axis, .. } => {
                return Err(Error::mismatch(format!(
                    "`{key}` is quantized per channel along axis {axis}; weights need axis 0"
                )));
            }
        };
        QWeight::from_raw(data.clone(), shape, qparams)
            .map_err(|e| Error::mismatch(format!("`{key}`: {e}")))
    }

    fn bias(&self, name: &str, out: usize) -> Result<Option<Vec<f32>>> {
        let key = format!("{name}.bias");
        match self.get(&key) {
            None | Some(StateValue::None) => Ok(None),
            Some(StateValue::Float { shape, data }) if shape.as_slice() == [out] => {
                Ok(Some(data.clone()))
            }
            Some(other) => Err(bad_entry(
                &key,
                &format!("a float tensor of shape [{out}]"),
                other,
            )),
        }
    }
}

fn bad_entry(key: &str, expected: &str, got: &StateValue) -> Error {
    Error::mismatch(format!(
        "`{key}` should be {expected}, found a {} {:?}",
        got.kind(),
        got.shape().unwrap_or(&[])
    ))
}

/// The ReLU a converted layer fuses, or an error for ReLU6 (which int8 layers do not have).
fn fused_relu(activation: Activation, name: &str) -> Result<bool> {
    match activation {
        Activation::Relu => Ok(true),
        Activation::Identity => Ok(false),
        Activation::Relu6 => Err(Error::Quant(format!(
            "`{name}` ends in ReLU6, which has no int8 form: call replace_relu first"
        ))),
    }
}

/// Gives every quantizable layer of `model` its int8 form from `state` (the model's own
/// architecture, unconverted or converted; its float parameters are not used), running with
/// `engine`'s arithmetic. Strict: a missing, unexpected or mis-shaped entry is an error that
/// names it, and on error the model is unchanged.
pub fn load_int8_state_dict<M: Quantizable>(
    model: &mut M,
    state: &StateDict,
    engine: Engine,
) -> Result<()> {
    // Entries the model has no place for are an error before anything is built.
    let mut expected = BTreeSet::new();
    model.visit_layers(&mut |name, layer| {
        let fields: &[&str] = match layer {
            QuantLayer::Conv(_) | QuantLayer::Linear(_) => {
                &["weight", "bias", "scale", "zero_point"]
            }
            QuantLayer::Quant(_) | QuantLayer::Functional(_) => &["scale", "zero_point"],
        };
        expected.extend(fields.iter().map(|f| format!("{name}.{f}")));
        Ok(())
    })?;
    let unexpected: Vec<&str> = state
        .keys()
        .map(String::as_str)
        .filter(|k| !expected.contains(*k))
        .collect();
    if !unexpected.is_empty() {
        let hint = if unexpected.iter().any(|k| k.ends_with("running_mean")) {
            " (batch-norm statistics: this looks like a float checkpoint, not an int8 one)"
        } else {
            ""
        };
        let more = match unexpected.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        return Err(Error::mismatch(format!(
            "the int8 checkpoint has entries the model does not: {}{more}{hint}",
            unexpected[..unexpected.len().min(5)].join(", ")
        )));
    }
    let reader = Reader { state };
    install_int8(model, |name, layer, input| {
        Ok(match layer {
            QuantLayer::Conv(c) => {
                let weight = reader.weight(name, &c.conv.weight.dims())?;
                let bias = reader.bias(name, weight.out_channels())?;
                let output = reader.output(name)?;
                let mut spec = conv_spec(c)?;
                spec.relu = fused_relu(c.activation, name)?;
                let conv = Int8Conv2d::new(weight, bias, spec, input, output, engine)?;
                Int8Part::Conv(Arc::new(conv))
            }
            QuantLayer::Linear(l) => {
                let [inputs, outputs] = l.linear.weight.dims();
                let weight = reader.weight(name, &[outputs, inputs])?;
                let bias = reader.bias(name, outputs)?;
                let output = reader.output(name)?;
                let relu = fused_relu(l.activation, name)?;
                let linear = Int8Linear::new(weight, bias, relu, input, output, engine)?;
                Int8Part::Linear(Arc::new(linear))
            }
            QuantLayer::Quant(_) | QuantLayer::Functional(_) => Int8Part::Output(QuantizedOutput {
                qparams: reader.output(name)?,
                engine,
            }),
        })
    })
}
