//! Constant folding: a small evaluator over the constants of an ONNX graph.
//!
//! Exporters such as PyTorch's `torch.onnx.export` compute reshape targets at run time
//! (`x.view(x.size(0), -1)` becomes `Shape → Gather → Unsqueeze → Concat → Reshape`). In moat
//! every per-sample shape is static, so such subgraphs are evaluated at import time. The one
//! unknown is the batch size, carried symbolically as [`Dim::Batch`]: `Shape` of a computed
//! value is `[N, d1, …]`, data-movement ops (`Gather`, `Slice`, `Concat`, `Squeeze`, …) move
//! `N` around like any element, and arithmetic keeps it only where the result is still exactly
//! `N` (`N·1`, `N + 0`, …); anything else that computes with `N` is an error.
//!
//! Every function here is pure and returns `Err(reason)` rather than panicking; results are
//! limited to [`FOLD_LIMIT`] elements.

use super::constant::{Const, ConstData, Dim, LIMIT, checked_numel, show_dims};
use super::proto::data_type;

/// Most elements a folded constant may have (the shape subgraphs moat folds have a handful).
pub(crate) const FOLD_LIMIT: usize = 1 << 22;

/// Most elements all folded constants of one model may have together.
pub(crate) const FOLD_BUDGET: usize = 1 << 24;

/// A folded constant, or why it cannot be computed.
pub(crate) type Folded = std::result::Result<Const, String>;

/// The element-wise arithmetic ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    /// `a + b`.
    Add,
    /// `a / b` (integers: truncated towards zero).
    Div,
    /// `a · b`.
    Mul,
    /// `a − b`.
    Sub,
}

impl Arith {
    /// The ONNX op type.
    pub fn op_type(self) -> &'static str {
        match self {
            Arith::Add => "Add",
            Arith::Div => "Div",
            Arith::Mul => "Mul",
            Arith::Sub => "Sub",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Div => "/",
            Arith::Mul => "*",
            Arith::Sub => "-",
        }
    }
}

/// Applies `$body` (an expression over `$v`, a slice of any element type, that may use `?`) to
/// the elements of a constant, keeping the element type.
macro_rules! map_data {
    ($data:expr, |$v:ident| $body:expr) => {
        match $data {
            ConstData::F32($v) => ConstData::F32($body),
            ConstData::I64($v) => ConstData::I64($body),
            ConstData::Sym($v) => ConstData::Sym($body),
        }
    };
}

/// Normalises a possibly negative axis of a rank-`rank` tensor.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis.saturating_add(r) } else { axis };
    if (0..r).contains(&a) { Ok(a as usize) } else { Err(format!("axis {axis} is out of range for rank {rank}")) }
}

/// Highest rank the evaluator works on.
const MAX_RANK: usize = 32;

/// Fails for inputs the evaluator does not take: rank above [`MAX_RANK`], or an axis longer
/// than [`FOLD_LIMIT`] (possible in a tensor with no elements).
fn check(c: &Const) -> std::result::Result<(), String> {
    if c.dims.len() > MAX_RANK || c.dims.iter().any(|&d| d > FOLD_LIMIT) {
        return Err(format!("moat folds constants of rank ≤ {MAX_RANK} and axes ≤ {FOLD_LIMIT}, not {:?}", c.dims));
    }
    Ok(())
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

/// Product of `dims` within [`FOLD_LIMIT`].
fn fold_numel(dims: &[usize]) -> std::result::Result<usize, String> {
    checked_numel(dims)
        .filter(|&n| n <= FOLD_LIMIT)
        .ok_or_else(|| format!("a folded constant of shape {dims:?} would exceed {FOLD_LIMIT} elements"))
}

/// The elements at offsets `Σ_k picks[k][i_k] · stride[k]` for every index tuple `(i_0, …)` in
/// row-major order: the one kernel behind gather, slice, transpose and broadcasting.
fn strided<T: Copy>(data: &[T], axes: &[(Vec<usize>, usize)]) -> std::result::Result<Vec<T>, String> {
    fn walk<T: Copy>(data: &[T], axes: &[(Vec<usize>, usize)], base: usize, out: &mut Vec<T>) -> Option<()> {
        match axes.split_first() {
            None => out.push(*data.get(base)?),
            Some(((picks, stride), rest)) => {
                for &p in picks {
                    walk(data, rest, base + p * stride, out)?;
                }
            }
        }
        Some(())
    }
    let count = fold_numel(&axes.iter().map(|(p, _)| p.len()).collect::<Vec<_>>())?;
    let mut out = Vec::with_capacity(count);
    walk(data, axes, 0, &mut out).ok_or("an index is out of bounds")?;
    Ok(out)
}

/// A constant's elements rearranged by [`strided`] into shape `dims`.
fn rearrange(c: &Const, axes: &[(Vec<usize>, usize)], dims: Vec<usize>) -> Folded {
    Ok(Const::new(dims, map_data!(&c.data, |v| strided(v, axes)?)))
}

/// `Gather` along `axis` with integer `indices` of any shape (negative indices count from the
/// end): output shape `dims[..axis] ++ indices.dims ++ dims[axis + 1..]`.
pub(crate) fn gather(data: &Const, indices: &Const, axis: i64) -> Folded {
    check(data)?;
    check(indices)?;
    let rank = data.dims.len();
    let a = norm_axis(axis, rank)?;
    let size = data.dims[a];
    let picks = indices
        .ints()?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i.saturating_add(size as i64) } else { i };
            usize::try_from(j).ok().filter(|&j| j < size).ok_or_else(|| format!("index {i} is out of range 0..{size}"))
        })
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let st = strides(&data.dims);
    let axes: Vec<(Vec<usize>, usize)> =
        (0..rank).map(|k| if k == a { (picks.clone(), st[k]) } else { ((0..data.dims[k]).collect(), st[k]) }).collect();
    let dims = [&data.dims[..a], &indices.dims[..], &data.dims[a + 1..]].concat();
    rearrange(data, &axes, dims)
}

/// `Slice` with ONNX's clamping rules: per listed axis (default: the first `starts.len()`), a
/// negative start or end counts from the end, then both are clamped to the axis (to
/// `[0, d]` for a positive step, `[-1, d − 1]` for a negative one).
pub(crate) fn slice(data: &Const, starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>) -> Folded {
    check(data)?;
    let rank = data.dims.len();
    let n = starts.len();
    if ends.len() != n || axes.is_some_and(|a| a.len() != n) || steps.is_some_and(|s| s.len() != n) {
        return Err(format!("starts, ends, axes and steps differ in length ({n} starts, {} ends)", ends.len()));
    }
    let mut picks: Vec<Option<Vec<usize>>> = vec![None; rank];
    for i in 0..n {
        let a = match axes {
            Some(axes) => norm_axis(axes[i], rank)?,
            None => norm_axis(i as i64, rank)?,
        };
        if picks[a].is_some() {
            return Err(format!("axis {a} is sliced twice"));
        }
        let step = steps.map_or(1, |s| s[i]);
        let d = data.dims[a] as i64;
        let from_end = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (start, end) = (from_end(starts[i]), from_end(ends[i]));
        let mut chosen = Vec::new();
        if step > 0 {
            let (mut k, end) = (start.clamp(0, d), end.clamp(0, d));
            while k < end {
                chosen.push(k as usize);
                k = k.saturating_add(step);
            }
        } else if step < 0 && d > 0 {
            let (mut k, end) = (start.clamp(0, d - 1), end.clamp(-1, d - 1));
            while k > end {
                chosen.push(k as usize);
                k = k.saturating_add(step);
            }
        } else if step == 0 {
            return Err("step 0".into());
        }
        picks[a] = Some(chosen);
    }
    let st = strides(&data.dims);
    let axes: Vec<(Vec<usize>, usize)> =
        picks.into_iter().enumerate().map(|(k, p)| (p.unwrap_or_else(|| (0..data.dims[k]).collect()), st[k])).collect();
    let dims = axes.iter().map(|(p, _)| p.len()).collect();
    rearrange(data, &axes, dims)
}

/// `Transpose` by `perm` (default: reverse the axes).
pub(crate) fn transpose(data: &Const, perm: Option<&[i64]>) -> Folded {
    check(data)?;
    let rank = data.dims.len();
    let perm = permutation(perm, rank)?;
    let st = strides(&data.dims);
    let axes: Vec<(Vec<usize>, usize)> = perm.iter().map(|&p| ((0..data.dims[p]).collect(), st[p])).collect();
    let dims = perm.iter().map(|&p| data.dims[p]).collect();
    rearrange(data, &axes, dims)
}

/// A `Transpose` permutation of `rank` axes, checked (default: reversed).
pub(crate) fn permutation(perm: Option<&[i64]>, rank: usize) -> std::result::Result<Vec<usize>, String> {
    let Some(perm) = perm else { return Ok((0..rank).rev().collect()) };
    let p: Vec<usize> = perm.iter().filter_map(|&v| usize::try_from(v).ok()).filter(|&v| v < rank).collect();
    let mut seen = vec![false; rank];
    let is_permutation =
        p.len() == rank && perm.len() == rank && p.iter().all(|&v| !std::mem::replace(&mut seen[v], true));
    if is_permutation { Ok(p) } else { Err(format!("perm {perm:?} is not a permutation of {rank} axes")) }
}

/// `Concat` along `axis`; all parts have the same rank and agree on the other axes.
pub(crate) fn concat(parts: &[&Const], axis: i64) -> Folded {
    let first = parts.first().ok_or("no inputs")?;
    let rank = first.dims.len();
    let a = norm_axis(axis, rank)?;
    let mut dims = first.dims.clone();
    dims[a] = 0;
    for p in parts {
        let same = p.dims.len() == rank && (0..rank).all(|k| k == a || p.dims[k] == first.dims[k]);
        if !same {
            return Err(format!("cannot concatenate shapes {:?} and {:?} along axis {a}", first.dims, p.dims));
        }
        dims[a] += p.dims[a];
    }
    fold_numel(&dims)?;
    // Row-major: for every index of the axes before `a`, one block of each part in turn.
    let outer: usize = first.dims[..a].iter().product();
    let block = |c: &Const| c.dims[a..].iter().product::<usize>();
    fn join<T: Copy>(parts: &[(&[T], usize)], outer: usize) -> std::result::Result<Vec<T>, String> {
        let mut out = Vec::with_capacity(parts.iter().map(|(v, _)| v.len()).sum());
        for o in 0..outer {
            for (v, b) in parts {
                out.extend_from_slice(v.get(o * b..(o + 1) * b).ok_or("a part has fewer elements than its shape")?);
            }
        }
        Ok(out)
    }
    let data = if parts.iter().all(|p| matches!(p.data, ConstData::F32(_))) {
        let v: Vec<(&[f32], usize)> = parts.iter().map(|p| (p.floats().unwrap_or(&[]), block(p))).collect();
        ConstData::F32(join(&v, outer)?)
    } else if parts.iter().all(|p| matches!(p.data, ConstData::I64(_))) {
        let v: Vec<(&[i64], usize)> = parts.iter().map(|p| (p.ints().unwrap_or(&[]), block(p))).collect();
        ConstData::I64(join(&v, outer)?)
    } else {
        let owned = parts.iter().map(|p| p.dims_data()).collect::<std::result::Result<Vec<_>, _>>()?;
        let v: Vec<(&[Dim], usize)> = owned.iter().zip(parts).map(|(d, p)| (d.as_slice(), block(p))).collect();
        ConstData::Sym(join(&v, outer)?)
    };
    Ok(Const::new(dims, data))
}

/// The shape `Reshape(shape = spec)` gives a constant of shape `dims`: `0` copies the input
/// dimension (unless `allow_zero`), one `-1` is inferred.
pub(crate) fn reshape_dims(dims: &[usize], spec: &[i64], allow_zero: bool) -> std::result::Result<Vec<usize>, String> {
    let total = checked_numel(dims).ok_or("too large")?;
    let mut out = Vec::with_capacity(spec.len());
    let mut inferred = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 if !allow_zero => out.push(*dims.get(i).ok_or("0 copies an axis the input does not have")?),
            -1 if inferred.is_none() => {
                inferred = Some(out.len());
                out.push(1);
            }
            -1 => return Err("more than one -1".into()),
            d if d >= 0 && d as u64 <= LIMIT as u64 => out.push(d as usize),
            _ => return Err(format!("invalid dimension {d}")),
        }
    }
    let known = checked_numel(&out).ok_or("too large")?;
    match inferred {
        Some(k) if known > 0 && total.is_multiple_of(known) => out[k] = total / known,
        Some(_) => return Err(format!("cannot infer the -1 of {spec:?} for {total} elements")),
        None if known != total => return Err(format!("{total} elements do not fit shape {out:?}")),
        None => {}
    }
    Ok(out)
}

/// The constant with a new shape of the same element count.
pub(crate) fn with_dims(c: &Const, dims: Vec<usize>) -> Folded {
    if checked_numel(&dims) != Some(c.data.len()) {
        return Err(format!("cannot view {} elements as shape {dims:?}", c.data.len()));
    }
    Ok(Const { dims, data: c.data.clone() })
}

/// `Squeeze`: drops the listed size-1 axes (all size-1 axes when `axes` is `None`).
pub(crate) fn squeeze(c: &Const, axes: Option<&[i64]>) -> Folded {
    let rank = c.dims.len();
    let drop: Vec<usize> = match axes {
        None => (0..rank).filter(|&k| c.dims[k] == 1).collect(),
        Some(axes) => axes.iter().map(|&a| norm_axis(a, rank)).collect::<std::result::Result<_, _>>()?,
    };
    if let Some(&k) = drop.iter().find(|&&k| c.dims[k] != 1) {
        return Err(format!("cannot squeeze axis {k} of size {}", c.dims[k]));
    }
    let dims = (0..rank).filter(|k| !drop.contains(k)).map(|k| c.dims[k]).collect();
    with_dims(c, dims)
}

/// `Unsqueeze`: inserts size-1 axes at the listed positions of the output.
pub(crate) fn unsqueeze(c: &Const, axes: &[i64]) -> Folded {
    let rank = c.dims.len() + axes.len();
    let axes = axes.iter().map(|&a| norm_axis(a, rank)).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut rest = c.dims.iter();
    let mut dims = Vec::with_capacity(rank);
    for k in 0..rank {
        if axes.contains(&k) {
            dims.push(1);
        } else {
            dims.push(*rest.next().ok_or("an axis is listed twice")?);
        }
    }
    with_dims(c, dims)
}

/// The broadcast shape of `a` and `b` (numpy rules).
fn broadcast_shape(a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], k: usize| if k + s.len() >= rank { s[k + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|k| match (at(a, k), at(b, k)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// The [`strided`] axes that broadcast a tensor of shape `from` to shape `to`.
fn broadcast_axes(from: &[usize], to: &[usize]) -> Vec<(Vec<usize>, usize)> {
    let st = strides(from);
    let lead = to.len() - from.len();
    (0..to.len())
        .map(|k| {
            let stride = if k >= lead && from[k - lead] != 1 { st[k - lead] } else { 0 };
            ((0..to[k]).collect(), stride)
        })
        .collect()
}

/// `f(a, b)` element-wise with broadcasting.
fn zip_with<T: Copy, U>(
    (a, ad): (&[T], &[usize]),
    (b, bd): (&[T], &[usize]),
    f: impl Fn(T, T) -> std::result::Result<U, String>,
) -> std::result::Result<(Vec<usize>, Vec<U>), String> {
    let dims = broadcast_shape(ad, bd)?;
    let a = strided(a, &broadcast_axes(ad, &dims))?;
    let b = strided(b, &broadcast_axes(bd, &dims))?;
    let out = a.into_iter().zip(b).map(|(x, y)| f(x, y)).collect::<std::result::Result<_, _>>()?;
    Ok((dims, out))
}

fn int_op(op: Arith, x: i64, y: i64) -> std::result::Result<i64, String> {
    let r = match op {
        Arith::Add => x.checked_add(y),
        Arith::Sub => x.checked_sub(y),
        Arith::Mul => x.checked_mul(y),
        Arith::Div if y == 0 => return Err(format!("integer division {x} / 0")),
        Arith::Div => x.checked_div(y),
    };
    r.ok_or_else(|| format!("{x} {} {y} overflows", op.symbol()))
}

fn dim_op(op: Arith, x: Dim, y: Dim) -> std::result::Result<Dim, String> {
    match (x, y) {
        (Dim::Int(a), Dim::Int(b)) => int_op(op, a, b).map(Dim::Int),
        (Dim::Batch, Dim::Int(b)) if matches!((op, b), (Arith::Add | Arith::Sub, 0) | (Arith::Mul | Arith::Div, 1)) => {
            Ok(Dim::Batch)
        }
        (Dim::Int(a), Dim::Batch) if matches!((op, a), (Arith::Add, 0) | (Arith::Mul, 1)) => Ok(Dim::Batch),
        _ => Err(format!(
            "computes {x} {} {y} with the batch size N, which moat does not know at import time",
            op.symbol()
        )),
    }
}

/// `a op b` element-wise with broadcasting; both floats or both integers.
pub(crate) fn binary(op: Arith, a: &Const, b: &Const) -> Folded {
    check(a)?;
    check(b)?;
    let (dims, data) = match (&a.data, &b.data) {
        (ConstData::F32(x), ConstData::F32(y)) => {
            let f = |p: f32, q: f32| {
                Ok(match op {
                    Arith::Add => p + q,
                    Arith::Sub => p - q,
                    Arith::Mul => p * q,
                    Arith::Div => p / q,
                })
            };
            let (dims, v) = zip_with((x, &a.dims), (y, &b.dims), f)?;
            (dims, ConstData::F32(v))
        }
        (ConstData::I64(x), ConstData::I64(y)) => {
            let (dims, v) = zip_with((x, &a.dims), (y, &b.dims), |p, q| int_op(op, p, q))?;
            (dims, ConstData::I64(v))
        }
        (ConstData::F32(_), _) | (_, ConstData::F32(_)) => {
            return Err(format!("{} of a float and an integer tensor", op.op_type()));
        }
        _ => {
            let (x, y) = (a.dims_data()?, b.dims_data()?);
            let (dims, v) = zip_with((&x, &a.dims), (&y, &b.dims), |p, q| dim_op(op, p, q))?;
            (dims, ConstData::Sym(v))
        }
    };
    Ok(Const::new(dims, data))
}

/// `Cast` to `FLOAT`/`DOUBLE` (as f32) or `INT64`/`INT32`/`BOOL` (floats truncate towards zero).
pub(crate) fn cast(c: &Const, to: i32) -> Folded {
    let int_range = |v: i64| -> std::result::Result<i64, String> {
        match to {
            data_type::INT32 => {
                i32::try_from(v).map(i64::from).map_err(|_| format!("{v} does not fit the INT32 it is cast to"))
            }
            data_type::BOOL => Ok(i64::from(v != 0)),
            _ => Ok(v),
        }
    };
    let data = match (to, &c.data) {
        (data_type::FLOAT | data_type::DOUBLE, ConstData::F32(v)) => ConstData::F32(v.clone()),
        (data_type::FLOAT | data_type::DOUBLE, ConstData::I64(v)) => {
            ConstData::F32(v.iter().map(|&i| i as f32).collect())
        }
        (data_type::FLOAT | data_type::DOUBLE, ConstData::Sym(v)) => {
            return Err(format!("casts {} to a float: moat keeps the batch size N symbolic", show_dims(v)));
        }
        (data_type::INT64 | data_type::INT32 | data_type::BOOL, ConstData::F32(v)) => ConstData::I64(
            v.iter()
                .map(|&f| {
                    if f.is_finite() && f64::from(f.trunc()).abs() < 2f64.powi(63) {
                        int_range(f.trunc() as i64)
                    } else {
                        Err(format!("{f} does not fit an integer"))
                    }
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
        (data_type::INT64 | data_type::INT32 | data_type::BOOL, ConstData::I64(v)) => {
            ConstData::I64(v.iter().map(|&i| int_range(i)).collect::<std::result::Result<_, _>>()?)
        }
        (data_type::INT64 | data_type::INT32, ConstData::Sym(v)) => ConstData::Sym(
            v.iter()
                .map(|&d| match d {
                    Dim::Int(i) => int_range(i).map(Dim::Int),
                    Dim::Batch => Ok(Dim::Batch),
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
        (data_type::BOOL, ConstData::Sym(v)) => {
            return Err(format!("casts {} to BOOL: moat keeps the batch size N symbolic", show_dims(v)));
        }
        (other, _) => {
            return Err(format!(
                "cast to element type {other}: moat folds casts to FLOAT (1), DOUBLE (11), INT64 (7), INT32 (6) and BOOL (9)"
            ));
        }
    };
    Ok(Const::new(c.dims.clone(), data))
}

/// `ConstantOfShape`: a tensor of shape `shape` filled with the single element of `value`
/// (default float 0).
pub(crate) fn constant_of_shape(shape: &Const, value: Option<&Const>) -> Folded {
    let dims = shape
        .ints()?
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d <= LIMIT).ok_or_else(|| format!("invalid dimension {d}")))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let n = fold_numel(&dims)?;
    let data = match value.map(|v| &v.data) {
        None => ConstData::F32(vec![0.0; n]),
        Some(ConstData::F32(v)) if v.len() == 1 => ConstData::F32(vec![v[0]; n]),
        Some(ConstData::I64(v)) if v.len() == 1 => ConstData::I64(vec![v[0]; n]),
        Some(other) => return Err(format!("value must hold one number, not {}", other.len())),
    };
    Ok(Const::new(dims, data))
}

/// `Shape` of a tensor of shape `dims` (which may hold the batch size), restricted to the axes
/// `start..end` (ONNX clamping; opset 15).
pub(crate) fn shape_of(dims: &[Dim], start: Option<i64>, end: Option<i64>) -> Const {
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(r)));
    let part = if s < e { dims[s..e].to_vec() } else { vec![] };
    Const::new(vec![part.len()], ConstData::Sym(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[usize], v: &[i64]) -> Const {
        Const::i64(dims.to_vec(), v.to_vec())
    }

    fn floats(dims: &[usize], v: &[f32]) -> Const {
        Const::f32(dims.to_vec(), v.to_vec())
    }

    fn sym(v: &[Dim]) -> Const {
        Const::new(vec![v.len()], ConstData::Sym(v.to_vec()))
    }

    const N: Dim = Dim::Batch;

    #[test]
    fn pytorch_view_pattern_keeps_the_batch() -> Result<(), String> {
        // Shape(x) of x: [N, 16, 5, 5] → Gather(0) → Unsqueeze([0]) → Concat with [-1].
        let shape = shape_of(&[N, Dim::Int(16), Dim::Int(5), Dim::Int(5)], None, None);
        let batch = gather(&shape, &ints(&[], &[0]), 0)?;
        assert_eq!(batch, Const::new(vec![], ConstData::Sym(vec![N])));
        let batch = unsqueeze(&batch, &[0])?;
        let spec = concat(&[&batch, &ints(&[1], &[-1])], 0)?;
        assert_eq!(spec, sym(&[N, Dim::Int(-1)]));
        // Gathering a known axis drops the symbol: the result is plain integers.
        let c = gather(&shape, &ints(&[2], &[1, -1]), 0)?;
        assert_eq!(c, ints(&[2], &[16, 5]));
        assert_eq!(binary(Arith::Mul, &c, &ints(&[], &[2]))?, ints(&[2], &[32, 10]));
        Ok(())
    }

    #[test]
    fn arithmetic_keeps_the_batch_only_when_exact() -> Result<(), String> {
        let n = sym(&[N]);
        assert_eq!(binary(Arith::Mul, &n, &ints(&[1], &[1]))?, n);
        assert_eq!(binary(Arith::Add, &ints(&[], &[0]), &n)?, n);
        assert_eq!(binary(Arith::Div, &n, &ints(&[], &[1]))?, n);
        for (op, k) in [(Arith::Mul, 2), (Arith::Add, 1), (Arith::Sub, 3)] {
            let e = binary(op, &n, &ints(&[], &[k])).err().unwrap_or_default();
            assert!(e.contains("batch size N"), "{e}");
        }
        assert!(binary(Arith::Sub, &ints(&[], &[0]), &n).is_err(), "0 - N is not N");
        assert!(binary(Arith::Div, &ints(&[], &[7]), &ints(&[], &[0])).is_err());
        assert!(binary(Arith::Mul, &ints(&[], &[i64::MAX]), &ints(&[], &[2])).is_err());
        assert_eq!(binary(Arith::Div, &ints(&[], &[-7]), &ints(&[], &[2]))?, ints(&[], &[-3]), "truncates");
        assert!(binary(Arith::Add, &ints(&[], &[1]), &floats(&[], &[1.0])).is_err());
        Ok(())
    }

    #[test]
    fn broadcasting_follows_numpy() -> Result<(), String> {
        let a = floats(&[2, 1], &[1.0, 2.0]);
        let b = floats(&[3], &[10.0, 20.0, 30.0]);
        assert_eq!(binary(Arith::Add, &a, &b)?, floats(&[2, 3], &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]));
        assert_eq!(binary(Arith::Sub, &b, &floats(&[], &[1.0]))?, floats(&[3], &[9.0, 19.0, 29.0]));
        assert!(binary(Arith::Add, &floats(&[2], &[0.0; 2]), &b).is_err());
        Ok(())
    }

    #[test]
    fn slice_clamps_like_onnx() -> Result<(), String> {
        let v = ints(&[5], &[0, 1, 2, 3, 4]);
        let s = |st: i64, en: i64, step: i64| {
            slice(&v, &[st], &[en], None, Some(&[step])).map(|c| c.ints().map(<[i64]>::to_vec))
        };
        assert_eq!(s(1, 3, 1)?, Ok(vec![1, 2]));
        assert_eq!(s(-2, i64::MAX, 1)?, Ok(vec![3, 4]));
        assert_eq!(s(0, 5, 2)?, Ok(vec![0, 2, 4]));
        assert_eq!(s(i64::MAX, i64::MIN, -2)?, Ok(vec![4, 2, 0]));
        assert_eq!(s(-1, -6, -1)?, Ok(vec![4, 3, 2, 1, 0]));
        assert_eq!(s(3, 1, 1)?, Ok(vec![]));
        assert_eq!(s(0, 5, i64::MAX)?, Ok(vec![0]));
        assert!(s(0, 5, 0).is_err());
        // 2-D, an explicit axis, a negative axis.
        let m = ints(&[2, 3], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(slice(&m, &[1], &[3], Some(&[-1]), None)?, ints(&[2, 2], &[1, 2, 4, 5]));
        assert!(slice(&m, &[0, 0], &[1, 1], Some(&[1, -1]), None).is_err(), "axis sliced twice");
        // The batch symbol moves with its element.
        let shape = sym(&[N, Dim::Int(3)]);
        assert_eq!(slice(&shape, &[0], &[1], None, None)?, sym(&[N]));
        assert_eq!(slice(&shape, &[1], &[2], None, None)?, ints(&[1], &[3]));
        // Empty axes, and huge axes of empty tensors (refused before anything is allocated).
        assert_eq!(slice(&ints(&[0], &[]), &[-1], &[i64::MIN], None, Some(&[-1]))?.dims, [0]);
        let wide = floats(&[0, LIMIT], &[]);
        assert!(transpose(&wide, None).is_err());
        assert!(slice(&wide, &[0], &[1], None, None).is_err());
        Ok(())
    }

    #[test]
    fn gather_transpose_concat_squeeze() -> Result<(), String> {
        let m = floats(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(gather(&m, &ints(&[2], &[2, 0]), 1)?, floats(&[2, 2], &[2.0, 0.0, 5.0, 3.0]));
        assert_eq!(gather(&m, &ints(&[1, 1], &[-1]), 0)?, floats(&[1, 1, 3], &[3.0, 4.0, 5.0]));
        assert!(gather(&m, &ints(&[], &[2]), 0).is_err());
        assert!(gather(&m, &ints(&[], &[0]), 2).is_err());
        assert_eq!(transpose(&m, None)?, floats(&[3, 2], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
        assert!(transpose(&m, Some(&[0, 0])).is_err());
        assert!(transpose(&m, Some(&[0])).is_err());
        let c = concat(&[&m, &floats(&[2, 1], &[9.0, 8.0])], -1)?;
        assert_eq!(c, floats(&[2, 4], &[0.0, 1.0, 2.0, 9.0, 3.0, 4.0, 5.0, 8.0]));
        assert!(concat(&[&m, &floats(&[1, 2], &[0.0; 2])], 0).is_err());
        assert!(concat(&[&m, &ints(&[2, 3], &[0; 6])], 0).is_err(), "float with int");
        let u = unsqueeze(&m, &[0, -1])?;
        assert_eq!(u.dims, [1, 2, 3, 1]);
        assert!(unsqueeze(&m, &[1, 1]).is_err());
        assert_eq!(squeeze(&u, None)?.dims, [2, 3]);
        assert_eq!(squeeze(&u, Some(&[-1]))?.dims, [1, 2, 3]);
        assert!(squeeze(&u, Some(&[1])).is_err());
        Ok(())
    }

    #[test]
    fn reshape_cast_and_constant_of_shape() -> Result<(), String> {
        assert_eq!(reshape_dims(&[2, 3, 4], &[0, -1], false)?, [2, 12]);
        assert_eq!(reshape_dims(&[2, 3, 4], &[-1], false)?, [24]);
        assert!(reshape_dims(&[2, 3, 4], &[5, -1], false).is_err());
        assert!(reshape_dims(&[2, 3, 4], &[-1, -1], false).is_err());
        assert_eq!(cast(&floats(&[3], &[1.9, -1.9, 0.0]), data_type::INT64)?, ints(&[3], &[1, -1, 0]));
        assert_eq!(cast(&ints(&[2], &[3, 0]), data_type::BOOL)?, ints(&[2], &[1, 0]));
        assert_eq!(cast(&ints(&[1], &[3]), data_type::FLOAT)?, floats(&[1], &[3.0]));
        assert_eq!(cast(&sym(&[N, Dim::Int(2)]), data_type::INT64)?, sym(&[N, Dim::Int(2)]));
        assert!(cast(&sym(&[N]), data_type::FLOAT).is_err());
        assert!(cast(&floats(&[1], &[f32::NAN]), data_type::INT64).is_err());
        assert!(cast(&floats(&[1], &[1e30]), data_type::INT64).is_err());
        assert!(cast(&ints(&[1], &[1 << 40]), data_type::INT32).is_err());
        assert!(cast(&ints(&[1], &[1]), 10).is_err(), "FLOAT16");
        assert_eq!(constant_of_shape(&ints(&[2], &[2, 2]), None)?, floats(&[2, 2], &[0.0; 4]));
        assert_eq!(constant_of_shape(&ints(&[1], &[3]), Some(&ints(&[1], &[7])))?, ints(&[3], &[7, 7, 7]));
        assert!(constant_of_shape(&ints(&[2], &[1 << 20, 1 << 20]), None).is_err(), "too large");
        assert!(constant_of_shape(&ints(&[1], &[-1]), None).is_err());
        assert!(constant_of_shape(&sym(&[N]), None).is_err());
        // Shape with start/end.
        let dims = [N, Dim::Int(3), Dim::Int(4)];
        assert_eq!(shape_of(&dims, Some(1), None), ints(&[2], &[3, 4]));
        assert_eq!(shape_of(&dims, Some(-1), Some(i64::MAX)), ints(&[1], &[4]));
        assert_eq!(shape_of(&dims, Some(2), Some(1)), ints(&[0], &[]));
        Ok(())
    }
}
