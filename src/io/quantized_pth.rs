//! Reading PyTorch state dicts that hold quantized tensors, such as the `state_dict()` of a
//! `torch.ao.quantization.convert`ed model or torchvision's int8 checkpoints
//! (`mobilenet_v2_qnnpack_37f702c5.pth`), which burn-store's reader refuses.
//!
//! Both `torch.save` formats are read (zip and legacy; see `io::torch_archive`). The
//! pickle is run by the bounded machine in `io::pickle`; the only calls understood are
//! PyTorch's tensor rebuild functions (`torch._utils._rebuild_tensor_v2`, `_rebuild_qtensor`
//! with per-tensor and per-channel affine quantizers, `_rebuild_parameter`,
//! `torch._tensor._rebuild_from_type_v2`) and `collections.OrderedDict`. Views are read through
//! their offset and strides and come back contiguous (row-major).
//!
//! No crate reads quantized tensors: `pytorch-reader` (behind burn-store) refuses them and
//! keeps its pickle machine private, so this one is written here. A malformed or hostile file
//! gives [`Error::Checkpoint`] naming the file and the problem, never a panic: every length is
//! checked against what the file holds before anything is allocated, and nesting, object
//! counts, shared references and the data a state dict may expand to are capped.

use std::collections::BTreeMap;
use std::path::Path;

use super::pickle::{self, Id, Obj, Pickle};
use super::torch_archive::{self, DType, Storages, storage_ref};
pub use crate::state::{QScheme, StateValue};
use crate::{Error, Result};

/// Reads a `torch.save`d state dict (zip or legacy format) whose tensors may be quantized.
///
/// Keys come back sorted; every tensor is materialized contiguous. Errors:
/// [`Error::Io`] if the file cannot be read, [`Error::Checkpoint`] (naming the file and the
/// problem) if it is not a well-formed `torch.save` state dict.
pub fn read_quantized_state_dict(path: &Path) -> Result<BTreeMap<String, StateValue>> {
    let (pk, storages) = torch_archive::open(path)?;
    Reader::new(&pk, storages, false)
        .state_dict()
        .map_err(|reason| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        })
}

/// The keys of the `torch.save`d state dict at `path`, in the file's order, from its pickle
/// alone (no tensor data is read): enough to tell a checkpoint's form or family apart.
pub(crate) fn read_state_dict_keys(path: &Path) -> Result<Vec<String>> {
    let (pk, _) = torch_archive::open(path)?;
    state_dict_entries(&pk)
        .map(|entries| entries.map(|(key, _)| key.clone()).collect())
        .map_err(|reason| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        })
}

/// The root dict's `(key, value)` entries; an error unless the root is a dict of `str` keys.
fn state_dict_entries(pk: &Pickle) -> Result<impl Iterator<Item = (&String, Id)>, String> {
    let Obj::Dict(items) = pk.get(pk.root()) else {
        return Err(format!(
            "the saved object is a {}, not a state dict",
            pk.describe(pk.root())
        ));
    };
    let entries = items
        .iter()
        .map(|&(k, v)| match pk.get(k) {
            Obj::Str(key) => Ok((key, v)),
            _ => Err(format!("state-dict key is a {}, not a str", pk.describe(k))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(entries.into_iter())
}

/// Checks that `path` is a well-formed `torch.save`d float state dict without reading the
/// tensor data: the archive or legacy stream, the pickle (bounded), every value a tensor
/// rebuild PyTorch writes (no other calls), every view inside its storage, every storage
/// present with its declared size. A quantized tensor is an error that says to read the file
/// as an int8 model. The float loader runs this before burn-store's reader, so that hostile or
/// malformed files get this reader's limits and messages.
pub(crate) fn check_float_state_dict(path: &Path) -> Result<()> {
    let (pk, storages) = torch_archive::open(path)?;
    Reader::new(&pk, storages, true)
        .state_dict()
        .map(|_| ())
        .map_err(|reason| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        })
}

// ------------------------------------------------------------------------------------------
// Tensors

/// A tensor as the pickle declares it: where its elements are in which storage.
#[derive(Debug, Clone)]
struct View {
    key: String,
    dtype: DType,
    offset: u64,
    shape: Vec<usize>,
    /// Strides in elements; 0 for dimensions of size 1 (where they do not matter).
    stride: Vec<u64>,
    numel: usize,
}

impl View {
    fn is_contiguous(&self) -> bool {
        let mut expect = 1u64;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expect {
                return false;
            }
            expect = expect.saturating_mul(n as u64);
        }
        true
    }
}

/// Converts the pickle's objects into state-dict values, reading storages on demand.
struct Reader<'a> {
    pk: &'a Pickle,
    storages: Storages,
    /// Elements the state dict may still expand to (bounds aliasing views).
    budget: u64,
    /// Objects the conversion may still visit (bounds shared-reference blow-ups).
    visits: usize,
    /// Check only: read no tensor data, refuse quantized tensors.
    dry: bool,
}

impl<'a> Reader<'a> {
    fn new(pk: &'a Pickle, storages: Storages, dry: bool) -> Self {
        Reader {
            pk,
            dry,
            budget: storages
                .file_len()
                .saturating_mul(4)
                .saturating_add(1 << 20),
            visits: pk.objects().len().saturating_mul(4).saturating_add(1024),
            storages,
        }
    }

    fn state_dict(&mut self) -> Result<BTreeMap<String, StateValue>, String> {
        let mut out = BTreeMap::new();
        for (key, v) in state_dict_entries(self.pk)? {
            let value = self.value(v, 0).map_err(|e| format!("key '{key}': {e}"))?;
            out.insert(key.clone(), value);
        }
        Ok(out)
    }

    fn value(&mut self, id: Id, depth: u16) -> Result<StateValue, String> {
        let pk = self.pk;
        if depth > pickle::MAX_NESTING {
            return Err(format!(
                "values nested deeper than {} levels",
                pickle::MAX_NESTING
            ));
        }
        self.visits = self
            .visits
            .checked_sub(1)
            .ok_or("the values reference each other too often (shared-reference blow-up)")?;
        Ok(match pk.get(id) {
            Obj::None => StateValue::None,
            Obj::Tuple(items) | Obj::List(items) => StateValue::Tuple(
                items
                    .iter()
                    .map(|&i| self.value(i, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Obj::Call { func, args, .. } => {
                let (view, qparams) = self.rebuild(*func, *args, depth + 1)?;
                if self.dry {
                    if qparams.is_some() || view.dtype.is_quantized() {
                        return Err(format!(
                            "a quantized {:?} tensor: this is an int8 model, read it as one \
                             (`read_quantized_state_dict`, the CLI's `--quantized`)",
                            view.dtype
                        ));
                    }
                    self.spend(view.numel)?;
                    return Ok(StateValue::None);
                }
                let qscheme = match qparams {
                    Some(q) => Some(self.qscheme(q, &view, depth + 1)?),
                    None => None,
                };
                self.materialize(&view, qscheme)?
            }
            Obj::Global { module, name } => StateValue::Other(format!("{module}.{name}")),
            _ => StateValue::Other(pk.describe(id)),
        })
    }

    /// Interprets `func(*args)`: a tensor view and, for a quantized tensor, its qparams tuple.
    fn rebuild(&mut self, func: Id, args: Id, depth: u16) -> Result<(View, Option<Id>), String> {
        let pk = self.pk;
        if depth > pickle::MAX_NESTING {
            return Err("tensor rebuild calls nested too deeply".into());
        }
        let (Obj::Global { module, name }, Obj::Tuple(a)) = (pk.get(func), pk.get(args)) else {
            return Err(format!("call of {} is not understood", pk.describe(func)));
        };
        let arg = |i: usize| {
            a.get(i)
                .copied()
                .ok_or_else(|| format!("{module}.{name}: missing argument {i}"))
        };
        match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                let view = self.view(a)?;
                if view.dtype.is_quantized() {
                    return Err(format!(
                        "a {:?} storage rebuilt as a plain tensor",
                        view.dtype
                    ));
                }
                Ok((view, None))
            }
            ("torch._utils", "_rebuild_qtensor") => {
                let view = self.view(a)?;
                if !view.dtype.is_quantized() {
                    return Err(format!("a quantized tensor on a {:?} storage", view.dtype));
                }
                Ok((view, Some(arg(4)?)))
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match pk.get(arg(0)?) {
                    Obj::Call { func, args, .. } => self.rebuild(*func, *args, depth + 1),
                    _ => Err(format!("{name} of a {}", pk.describe(arg(0)?))),
                }
            }
            // _rebuild_from_type_v2(func, new_type, args, state): the tensor is func(*args).
            ("torch._tensor", "_rebuild_from_type_v2") => self.rebuild(arg(0)?, arg(2)?, depth + 1),
            _ => Err(format!(
                "unsupported call {module}.{name} (only PyTorch's tensor rebuild functions are read)"
            )),
        }
    }

    /// `(storage, storage_offset, size, stride, ...)` of the rebuild functions.
    fn view(&self, a: &[Id]) -> Result<View, String> {
        let pk = self.pk;
        let [storage, offset, size, stride, ..] = a else {
            return Err(format!(
                "tensor rebuild with {} arguments, expected at least 4",
                a.len()
            ));
        };
        let Obj::PersId(pid) = pk.get(*storage) else {
            return Err(format!("tensor storage is a {}", pk.describe(*storage)));
        };
        let r = storage_ref(pk, *pid)?;
        let info = self
            .storages
            .info(&r.key)
            .ok_or_else(|| format!("storage '{}' is unknown", r.key))?;
        let ints = |id: Id| match pk.get(id) {
            Obj::Tuple(t) | Obj::List(t) => t
                .iter()
                .map(|&i| pk.as_u64(i))
                .collect::<Result<Vec<_>, _>>(),
            _ => Err(format!("tensor size/stride is a {}", pk.describe(id))),
        };
        let shape = ints(*size)?
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| format!("dimension {d} too large")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut stride = ints(*stride)?;
        if stride.len() != shape.len() {
            return Err(format!("size {shape:?} with {} strides", stride.len()));
        }
        for (s, &n) in stride.iter_mut().zip(&shape) {
            if n == 1 {
                *s = 0;
            }
        }
        let (base, limit) = match r.view {
            Some((off, n)) => (off, off.checked_add(n).filter(|&e| e <= info.numel)),
            None => (0, Some(info.numel)),
        };
        let limit = limit.ok_or("storage view extends past its storage")?;
        let offset = pk
            .as_u64(*offset)?
            .checked_add(base)
            .ok_or("storage offset overflows")?;
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
        if numel > 0 {
            let last = shape.iter().zip(&stride).try_fold(offset, |acc, (&n, &s)| {
                acc.checked_add((n as u64 - 1).checked_mul(s)?)
            });
            if last.is_none_or(|l| l >= limit) {
                return Err(format!(
                    "tensor of shape {shape:?} (offset {offset}, strides {stride:?}) reaches past \
                     its storage '{}' of {limit} elements",
                    r.key
                ));
            }
        }
        Ok(View {
            key: r.key,
            dtype: info.dtype,
            offset,
            shape,
            stride,
            numel,
        })
    }

    /// The quantizer parameters `(qscheme, ...)` of `_rebuild_qtensor`.
    fn qscheme(&mut self, id: Id, view: &View, depth: u16) -> Result<QScheme, String> {
        let pk = self.pk;
        let Obj::Tuple(q) = pk.get(id) else {
            return Err(format!("quantizer parameters are a {}", pk.describe(id)));
        };
        let scheme = match q.first().map(|&s| pk.get(s)) {
            Some(Obj::Global { module, name }) if module == "torch" => name.as_str(),
            _ => return Err("quantizer parameters do not start with a torch.qscheme".into()),
        };
        match (scheme, q.as_slice()) {
            ("per_tensor_affine", [_, scale, zp]) => Ok(QScheme::PerTensorAffine {
                scale: pk.as_f64(*scale)?,
                zero_point: pk.as_i64(*zp)?,
            }),
            ("per_channel_affine" | "per_channel_affine_float_qparams", [_, s, z, axis]) => {
                let axis = usize::try_from(pk.as_u64(*axis)?).unwrap_or(usize::MAX);
                let channels = *view.shape.get(axis).ok_or_else(|| {
                    format!(
                        "per-channel axis {axis} of a tensor of shape {:?}",
                        view.shape
                    )
                })?;
                let scales = self.numbers(*s, depth, true)?;
                let zps = self.numbers(*z, depth, false)?;
                let zero_points = zps
                    .iter()
                    .map(|z| match z {
                        Num::Int(i) => Ok(*i),
                        Num::Float(_) => Err("float zero points \
                            (per_channel_affine_float_qparams) are not supported"
                            .to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let scales: Vec<f64> = scales.iter().map(Num::as_f64).collect();
                if scales.len() != channels || zero_points.len() != channels {
                    return Err(format!(
                        "{} scales and {} zero points for {channels} channels",
                        scales.len(),
                        zero_points.len()
                    ));
                }
                Ok(QScheme::PerChannelAffine {
                    scales,
                    zero_points,
                    axis,
                })
            }
            _ => Err(format!(
                "qscheme torch.{scheme} with {} parameters is not supported",
                q.len().saturating_sub(1)
            )),
        }
    }

    /// Per-channel scales or zero points: a 1-d tensor (as PyTorch writes them) or a list.
    fn numbers(&mut self, id: Id, depth: u16, float: bool) -> Result<Vec<Num>, String> {
        let pk = self.pk;
        match pk.get(id) {
            Obj::Tuple(items) | Obj::List(items) => items
                .iter()
                .map(|&i| match pk.get(i) {
                    Obj::Int(v) => i64::try_from(*v)
                        .map(Num::Int)
                        .map_err(|_| format!("int {v} out of range")),
                    Obj::Float(f) => Ok(Num::Float(*f)),
                    _ => Err(format!("per-channel parameter is a {}", pk.describe(i))),
                })
                .collect(),
            Obj::Call { func, args, .. } => {
                let (view, q) = self.rebuild(*func, *args, depth + 1)?;
                if q.is_some() || view.shape.len() != 1 {
                    return Err("per-channel parameters are not a 1-d float or int tensor".into());
                }
                self.spend(view.numel)?;
                let bytes = self.storages.bytes(&view.key)?;
                Ok(match view.dtype {
                    DType::F64 => gather(bytes, &view, |b| Num::Float(f64::from_le_bytes(b)))?,
                    DType::F32 => {
                        gather(bytes, &view, |b| Num::Float(f32::from_le_bytes(b).into()))?
                    }
                    DType::I64 => gather(bytes, &view, |b| Num::Int(i64::from_le_bytes(b)))?,
                    DType::I32 => gather(bytes, &view, |b| Num::Int(i32::from_le_bytes(b).into()))?,
                    other => {
                        let what = if float { "scales" } else { "zero points" };
                        return Err(format!("per-channel {what} of dtype {other:?}"));
                    }
                })
            }
            _ => Err(format!("per-channel parameters are a {}", pk.describe(id))),
        }
    }

    fn spend(&mut self, numel: usize) -> Result<(), String> {
        self.budget = self.budget.checked_sub(numel as u64).ok_or(
            "the tensors view far more data than the file holds (aliased or expanded views)",
        )?;
        Ok(())
    }

    fn materialize(&mut self, view: &View, qscheme: Option<QScheme>) -> Result<StateValue, String> {
        self.spend(view.numel)?;
        let shape = view.shape.clone();
        // An empty tensor needs no storage bytes (its storage may even be missing).
        let b = if view.numel == 0 {
            &[][..]
        } else {
            self.storages.bytes(&view.key)?
        };
        let v = view;
        Ok(match (view.dtype, qscheme) {
            (DType::F32, _) => StateValue::Float {
                shape,
                data: gather(b, v, f32::from_le_bytes)?,
            },
            (DType::F64, _) => StateValue::Float {
                shape,
                data: gather(b, v, |x| f64::from_le_bytes(x) as f32)?,
            },
            (DType::F16, _) => StateValue::Float {
                shape,
                data: gather(b, v, |x| f16_to_f32(u16::from_le_bytes(x)))?,
            },
            (DType::BF16, _) => StateValue::Float {
                shape,
                data: gather(b, v, |x| {
                    f32::from_bits(u32::from(u16::from_le_bytes(x)) << 16)
                })?,
            },
            (DType::I64, _) => StateValue::Int {
                shape,
                data: gather(b, v, i64::from_le_bytes)?,
            },
            (DType::I32, _) => StateValue::Int {
                shape,
                data: gather(b, v, |x| i32::from_le_bytes(x).into())?,
            },
            (DType::I16, _) => StateValue::Int {
                shape,
                data: gather(b, v, |x| i16::from_le_bytes(x).into())?,
            },
            (DType::I8, _) => StateValue::Int {
                shape,
                data: gather(b, v, |[x]| (x as i8).into())?,
            },
            (DType::U8, _) => StateValue::Int {
                shape,
                data: gather(b, v, |[x]| x.into())?,
            },
            (DType::Bool, _) => StateValue::Int {
                shape,
                data: gather(b, v, |[x]| i64::from(x != 0))?,
            },
            (DType::QInt8, Some(qscheme)) => StateValue::QInt8 {
                shape,
                data: gather(b, v, |[x]| x as i8)?,
                qscheme,
            },
            (DType::QUInt8, Some(qscheme)) => StateValue::QUInt8 {
                shape,
                data: gather(b, v, |[x]| x)?,
                qscheme,
            },
            (DType::QInt32, Some(qscheme)) => StateValue::QInt32 {
                shape,
                data: gather(b, v, i32::from_le_bytes)?,
                qscheme,
            },
            (dtype, None) => return Err(format!("{dtype:?} tensor without quantizer parameters")),
        })
    }
}

/// A per-channel parameter before it is known to be a scale or a zero point.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(&self) -> f64 {
        match *self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// The view's elements in row-major order, each decoded from its `N` little-endian bytes.
/// [`Reader::view`] has checked that every element lies inside the storage; the reads are
/// bounds-checked again all the same.
fn gather<const N: usize, T>(
    bytes: &[u8],
    v: &View,
    decode: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if v.numel == 0 {
        return Ok(Vec::new());
    }
    let outside = || {
        format!(
            "tensor reaches past the {} bytes of storage '{}'",
            bytes.len(),
            v.key
        )
    };
    let elem = |i: u64| -> Result<T, String> {
        let at = usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(N))
            .ok_or_else(outside)?;
        let s = bytes
            .get(at..at.checked_add(N).ok_or_else(outside)?)
            .ok_or_else(outside)?;
        Ok(decode(<[u8; N]>::try_from(s).map_err(|_| outside())?))
    };
    if v.is_contiguous() {
        let start = usize::try_from(v.offset)
            .ok()
            .and_then(|o| o.checked_mul(N))
            .ok_or_else(outside)?;
        let end = v
            .numel
            .checked_mul(N)
            .and_then(|n| n.checked_add(start))
            .ok_or_else(outside)?;
        let s = bytes.get(start..end).ok_or_else(outside)?;
        return Ok(s
            .chunks_exact(N)
            .filter_map(|c| <[u8; N]>::try_from(c).ok())
            .map(decode)
            .collect());
    }
    // Odometer over the indices; strides of size-1 dimensions are 0, so every partial sum
    // stays within twice the (checked) last offset.
    let mut out = Vec::with_capacity(v.numel);
    let mut idx = vec![0usize; v.shape.len()];
    let mut at = v.offset;
    for _ in 0..v.numel {
        out.push(elem(at)?);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            at += v.stride[d];
            if idx[d] < v.shape[d] {
                break;
            }
            at -= v.stride[d] * v.shape[d] as u64;
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// IEEE half to single precision (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            let v = mant as f32 * f32::from_bits(0x3380_0000); // mant * 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, _) => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions() {
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x8000, -0.0),
        ] {
            assert_eq!(f16_to_f32(h).to_bits(), f.to_bits(), "{h:#x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
    }

    #[test]
    fn strided_views_are_gathered_row_major() {
        // A 2x3 row-major matrix read transposed (3x2, strides (1, 3)) from offset 1 of 7.
        let bytes: Vec<u8> = (0u8..7).collect();
        let v = View {
            key: "0".into(),
            dtype: DType::U8,
            offset: 1,
            shape: vec![3, 2],
            stride: vec![1, 3],
            numel: 6,
        };
        assert!(!v.is_contiguous());
        assert_eq!(gather(&bytes, &v, |[b]| b).unwrap(), vec![1, 4, 2, 5, 3, 6]);
        let short = &bytes[..5];
        assert!(
            gather(short, &v, |[b]| b)
                .unwrap_err()
                .contains("reaches past")
        );
    }
}
