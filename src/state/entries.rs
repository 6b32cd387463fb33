//! The int8 entries of a state dict, named and laid out as PyTorch's converted modules name
//! theirs: for a layer at path `p`, `p.weight` (qint8, per-tensor or per-channel), `p.bias`
//! (float), `p.scale` / `p.zero_point` (output qparams). Layers write and read their own
//! entries with these; every error names the entry.

use std::collections::BTreeMap;

use super::{QScheme, StateValue};
use crate::int8::{QParamsPt, QWeight, WeightQParams};
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

/// Writes a float tensor entry.
pub fn put_float(state: &mut StateDict, key: &str, shape: &[usize], data: Vec<f32>) {
    let shape = shape.to_vec();
    state.insert(key.to_string(), StateValue::Float { shape, data });
}

/// Writes a layer's output qparams: `name.scale` (float) and `name.zero_point` (int).
pub fn put_output(state: &mut StateDict, name: &str, qp: QParamsPt) {
    state.insert(format!("{name}.scale"), scalar_f32(qp.scale));
    state.insert(
        format!("{name}.zero_point"),
        scalar_i64(qp.zero_point as i64),
    );
}

/// Writes a layer's qint8 weight `name.weight` and float bias `name.bias` (if any).
pub fn put_weight_and_bias(state: &mut StateDict, name: &str, w: &QWeight, bias: Option<&[f32]>) {
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

/// Reads entries out of a state dict, naming the entry in every error.
pub struct Entries<'a> {
    state: &'a StateDict,
}

impl<'a> Entries<'a> {
    /// A reader of `state`.
    pub fn new(state: &'a StateDict) -> Self {
        Entries { state }
    }

    /// The entry `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a StateValue> {
        self.state.get(key)
    }

    /// The entry `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&'a StateValue> {
        self.get(key)
            .ok_or_else(|| Error::mismatch(format!("the int8 checkpoint has no `{key}`")))
    }

    /// The output qparams `name.scale` / `name.zero_point` (quint8 zero-point).
    pub fn output(&self, name: &str) -> Result<QParamsPt> {
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

    /// The qint8 weight `name.weight` of shape `expected` (per-channel along axis 0).
    pub fn weight(&self, name: &str, expected: &[usize]) -> Result<QWeight> {
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

    /// The float tensor `key` of shape `expected`, `None` if the entry is absent or not float.
    pub fn float(&self, key: &str, expected: &[usize]) -> Result<Option<Vec<f32>>> {
        match self.get(key) {
            Some(StateValue::Float { shape, data }) if shape.as_slice() == expected => {
                Ok(Some(data.clone()))
            }
            Some(StateValue::Float { shape, .. }) => Err(Error::mismatch(format!(
                "`{key}` has shape {shape:?} in the checkpoint but the model expects {expected:?}"
            ))),
            _ => Ok(None),
        }
    }

    /// The float bias `name.bias` of `out` elements, if present.
    pub fn bias(&self, name: &str, out: usize) -> Result<Option<Vec<f32>>> {
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
