//! Constant tensors (initializers and `Constant` nodes) and their `TensorProto` encoding.

use super::proto::{DATA_LOCATION_EXTERNAL, TensorProto, data_type};
use crate::error::{NnError, Result};

/// Largest dimension, padding, stride or element count the importer accepts: far above any real
/// model, and small enough that shape arithmetic can never overflow.
pub(crate) const LIMIT: usize = 1 << 28;

/// One element of an integer constant computed from shapes: a known integer or the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dim {
    /// The batch size `N` of the graph input, unknown until run time.
    Batch,
    /// A known integer.
    Int(i64),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Batch => f.write_str("N"),
            Dim::Int(v) => write!(f, "{v}"),
        }
    }
}

/// The elements of a constant.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ConstData {
    /// Floating-point elements (`FLOAT`, and `DOUBLE` rounded to f32).
    F32(Vec<f32>),
    /// Integer elements (`INT64`, `INT32`, `BOOL` as 0/1).
    I64(Vec<i64>),
    /// Integer elements of which at least one is the batch size ([`Dim::Batch`]): what `Shape`
    /// of a computed value yields. [`Const::new`] keeps this variant for data that holds a
    /// batch element only.
    Sym(Vec<Dim>),
}

impl ConstData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
            ConstData::Sym(v) => v.len(),
        }
    }
}

/// A constant tensor known at import time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Const {
    /// Shape (empty for a scalar).
    pub dims: Vec<usize>,
    /// Elements in row-major order; their count matches `dims`.
    pub data: ConstData,
}

impl Const {
    /// A constant with `Sym` data normalised: integers without a batch element become `I64`.
    pub fn new(dims: Vec<usize>, data: ConstData) -> Self {
        let data = match data {
            ConstData::Sym(v) if !v.contains(&Dim::Batch) => {
                ConstData::I64(v.into_iter().map(|d| if let Dim::Int(i) = d { i } else { 0 }).collect())
            }
            other => other,
        };
        Self { dims, data }
    }

    /// A float constant.
    pub fn f32(dims: Vec<usize>, data: Vec<f32>) -> Self {
        Self { dims, data: ConstData::F32(data) }
    }

    /// An integer constant.
    pub fn i64(dims: Vec<usize>, data: Vec<i64>) -> Self {
        Self { dims, data: ConstData::I64(data) }
    }

    /// The float elements, or a description of why there are none.
    pub fn floats(&self) -> std::result::Result<&[f32], String> {
        match &self.data {
            ConstData::F32(v) => Ok(v),
            ConstData::I64(_) | ConstData::Sym(_) => {
                Err(format!("an integer tensor of shape {:?} where floats are expected", self.dims))
            }
        }
    }

    /// The integer elements, or a description of why there are none.
    pub fn ints(&self) -> std::result::Result<&[i64], String> {
        match &self.data {
            ConstData::I64(v) => Ok(v),
            ConstData::F32(_) => Err(format!("a float tensor of shape {:?} where integers are expected", self.dims)),
            ConstData::Sym(v) => Err(format!(
                "the integers {} depend on the batch size N, which moat does not know at import time",
                show_dims(v)
            )),
        }
    }

    /// The integer elements, any of which may be the batch size, or a description of why
    /// there are none.
    pub fn dims_data(&self) -> std::result::Result<Vec<Dim>, String> {
        match &self.data {
            ConstData::I64(v) => Ok(v.iter().map(|&i| Dim::Int(i)).collect()),
            ConstData::Sym(v) => Ok(v.clone()),
            ConstData::F32(_) => Err(format!("a float tensor of shape {:?} where integers are expected", self.dims)),
        }
    }

    /// The single element of a one-element float constant.
    pub fn float_scalar(&self) -> std::result::Result<f32, String> {
        match self.floats()? {
            [v] => Ok(*v),
            other => Err(format!("{} elements where a scalar is expected", other.len())),
        }
    }
}

/// `[N, -1, 4]`-style text for integers that may hold the batch size.
pub(crate) fn show_dims(dims: &[Dim]) -> String {
    let items: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// Product of `dims`, `None` on overflow or beyond [`LIMIT`].
pub(crate) fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= LIMIT)
}

/// Little-endian fixed-width chunks of `raw`, checked against the expected element count.
fn chunks<'a, const W: usize>(name: &str, raw: &'a [u8], count: usize) -> Result<impl Iterator<Item = [u8; W]> + 'a> {
    if raw.len() != count.saturating_mul(W) {
        return Err(NnError::Onnx(format!(
            "tensor '{name}': raw_data holds {} bytes, its shape needs {count} elements of {W} bytes",
            raw.len()
        )));
    }
    Ok(raw.chunks_exact(W).map(|c| {
        let mut bytes = [0u8; W];
        bytes.copy_from_slice(c);
        bytes
    }))
}

/// Decodes a `TensorProto` (initializer or `Constant` value) into a [`Const`].
pub(crate) fn decode_tensor(t: &TensorProto) -> Result<Const> {
    let name = if t.name.is_empty() { "<unnamed>" } else { t.name.as_str() };
    if t.data_location == DATA_LOCATION_EXTERNAL || !t.external_data.is_empty() {
        return Err(NnError::Onnx(format!(
            "tensor '{name}' keeps its data in an external file; moat needs a self-contained model \
             (re-save it with onnx.save_model(model, path, save_as_external_data=False))"
        )));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d <= LIMIT))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| NnError::Onnx(format!("tensor '{name}' has invalid dimensions {:?}", t.dims)))?;
    let count =
        checked_numel(&dims).ok_or_else(|| NnError::Onnx(format!("tensor '{name}' of shape {dims:?} is too large")))?;
    let raw = t.raw_data.as_deref();
    let typed_len = |len: usize| -> Result<()> {
        if len != count {
            return Err(NnError::Onnx(format!("tensor '{name}' has {len} elements, its shape {dims:?} needs {count}")));
        }
        Ok(())
    };
    let data = match t.data_type {
        data_type::FLOAT => ConstData::F32(match raw {
            Some(raw) => chunks::<4>(name, raw, count)?.map(f32::from_le_bytes).collect(),
            None => {
                typed_len(t.float_data.len())?;
                t.float_data.clone()
            }
        }),
        data_type::DOUBLE => ConstData::F32(match raw {
            Some(raw) => chunks::<8>(name, raw, count)?.map(|b| f64::from_le_bytes(b) as f32).collect(),
            None => {
                typed_len(t.double_data.len())?;
                t.double_data.iter().map(|&v| v as f32).collect()
            }
        }),
        data_type::INT64 => ConstData::I64(match raw {
            Some(raw) => chunks::<8>(name, raw, count)?.map(i64::from_le_bytes).collect(),
            None => {
                typed_len(t.int64_data.len())?;
                t.int64_data.clone()
            }
        }),
        data_type::INT32 => ConstData::I64(match raw {
            Some(raw) => chunks::<4>(name, raw, count)?.map(|b| i64::from(i32::from_le_bytes(b))).collect(),
            None => {
                typed_len(t.int32_data.len())?;
                t.int32_data.iter().map(|&v| i64::from(v)).collect()
            }
        }),
        data_type::BOOL => ConstData::I64(match raw {
            Some(raw) => chunks::<1>(name, raw, count)?.map(|b| i64::from(b[0] != 0)).collect(),
            None => {
                typed_len(t.int32_data.len())?;
                t.int32_data.iter().map(|&v| i64::from(v != 0)).collect()
            }
        }),
        other => {
            return Err(NnError::Onnx(format!(
                "tensor '{name}' has element type {other}; moat reads FLOAT (1), DOUBLE (11), INT64 (7), INT32 (6) and BOOL (9)"
            )));
        }
    };
    Ok(Const { dims, data })
}

/// A named `FLOAT` tensor with its data in `raw_data` (little-endian), as moat writes weights.
pub(crate) fn float_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// A named 1-D `INT64` tensor (for `Reshape` shapes), data in `raw_data`.
pub(crate) fn int64_tensor(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: vec![data.len() as i64],
        data_type: data_type::INT64,
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_typed_fields_decode_alike() -> Result<()> {
        let raw = float_tensor("w", &[2, 2], &[1.0, -2.5, 3.25, 0.0]);
        let typed = TensorProto {
            dims: vec![2, 2],
            data_type: data_type::FLOAT,
            float_data: vec![1.0, -2.5, 3.25, 0.0],
            ..Default::default()
        };
        assert_eq!(decode_tensor(&raw)?, decode_tensor(&typed)?);
        let doubles = TensorProto {
            dims: vec![2],
            data_type: data_type::DOUBLE,
            raw_data: Some([0.5f64, -4.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        };
        assert_eq!(decode_tensor(&doubles)?, Const::f32(vec![2], vec![0.5, -4.0]));
        let ints = int64_tensor("s", &[-1, 16, 5, 5]);
        assert_eq!(decode_tensor(&ints)?, Const::i64(vec![4], vec![-1, 16, 5, 5]));
        let int32 =
            TensorProto { dims: vec![2], data_type: data_type::INT32, int32_data: vec![7, -3], ..Default::default() };
        assert_eq!(decode_tensor(&int32)?, Const::i64(vec![2], vec![7, -3]));
        Ok(())
    }

    #[test]
    fn bad_tensors_are_errors() {
        let short = TensorProto {
            dims: vec![3],
            data_type: data_type::FLOAT,
            raw_data: Some(vec![0; 8]),
            ..Default::default()
        };
        assert!(decode_tensor(&short).is_err());
        let huge = TensorProto { dims: vec![1 << 40, 1 << 40], data_type: data_type::FLOAT, ..Default::default() };
        assert!(decode_tensor(&huge).is_err());
        let negative = TensorProto { dims: vec![-1], data_type: data_type::FLOAT, ..Default::default() };
        assert!(decode_tensor(&negative).is_err());
        let external =
            TensorProto { dims: vec![1], data_type: data_type::FLOAT, data_location: 1, ..Default::default() };
        let e = decode_tensor(&external).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("external"), "{e}");
        let half = TensorProto { dims: vec![1], data_type: 10, int32_data: vec![0], ..Default::default() };
        assert!(decode_tensor(&half).is_err());
    }
}
