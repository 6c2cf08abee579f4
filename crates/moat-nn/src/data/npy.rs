//! numpy's `.npy` and `.npz` files, read and written here (no dependency beyond `flate2`,
//! which inflates compressed `.npz` members).
//!
//! **Reading** ([`read_npy`], [`read_npz`]): format versions 1.0, 2.0 and 3.0; C order only;
//! little- or big-endian `f2`/`f4`/`f8`, `i1`–`i8`, `u1`–`u8` and `b1`, every value converted to
//! `f32` (what moat models take). `.npz` is a zip archive of `.npy` members, stored
//! (`np.savez`) or deflated (`np.savez_compressed`), with numpy's ZIP64 size fields. Hostile
//! files are errors, never panics or huge allocations: the shape must hold exactly the bytes
//! present, at most [`MAX_ELEMENTS`] values, and a deflated member may not inflate past the
//! size its shape declares.
//!
//! **Writing** ([`write_npy`], [`write_npz`]): format 1.0, `<f4`, C order; `.npz` members
//! stored, CRC-32 checked by numpy on load.
//!
//! ```
//! use moat_nn::data::npy::{Array, read_npy, write_npy};
//!
//! let a = Array::new(vec![2, 3], vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0])?;
//! let bytes = write_npy(&a);
//! assert_eq!(read_npy(&bytes)?, a);
//! # Ok::<(), moat_nn::data::npy::NpyError>(())
//! ```

use std::io::Read;

use thiserror::Error;

/// Largest array read: 2^28 values (1 GiB as `f32`).
pub const MAX_ELEMENTS: usize = 1 << 28;
/// Largest `.npy` header accepted (numpy writes far smaller ones).
const MAX_HEADER: usize = 1 << 16;
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// A malformed or unsupported numpy file.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NpyError {
    /// Not a `.npy` file, or a damaged header.
    #[error("not a valid .npy file: {0}")]
    Format(String),
    /// A dtype moat cannot read as numbers.
    #[error("unsupported dtype '{0}': moat reads float (f2, f4, f8), integer (i1-i8, u1-u8) and bool arrays")]
    Dtype(String),
    /// The shape does not fit the data, or is too large.
    #[error("shape {shape:?}: {message}")]
    Shape {
        /// The declared shape.
        shape: Vec<u64>,
        /// What is wrong.
        message: String,
    },
    /// A damaged or unsupported `.npz` archive.
    #[error("not a valid .npz archive: {0}")]
    Zip(String),
    /// The `.npz` has no member of that name.
    #[error("no array '{name}' in the .npz (it holds {available:?})")]
    MissingArray {
        /// The name asked for.
        name: String,
        /// The arrays present.
        available: Vec<String>,
    },
}

type Result<T> = std::result::Result<T, NpyError>;

/// An n-dimensional `f32` array in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Array {
    /// An array of `shape` holding `data` (their sizes must agree).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return Err(NpyError::Shape {
                shape: shape.iter().map(|&d| d as u64).collect(),
                message: format!("does not hold the {} values given", data.len()),
            });
        }
        Ok(Self { shape, data })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, C order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, C order.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Bool,
    Float,
    Int,
    Uint,
}

/// An element type: kind, size in bytes, byte order.
#[derive(Clone, Copy, Debug)]
struct Dtype {
    kind: Kind,
    size: usize,
    big_endian: bool,
}

impl Dtype {
    fn parse(descr: &str) -> Result<Self> {
        let unsupported = || NpyError::Dtype(descr.to_string());
        let mut chars = descr.chars();
        let (order, rest) = match chars.next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (c, chars.as_str()),
            _ => ('=', descr),
        };
        let (kind, size) = rest.split_at_checked(1).ok_or_else(unsupported)?;
        let size: usize = size.parse().map_err(|_| unsupported())?;
        let kind = match (kind, size) {
            ("b", 1) => Kind::Bool,
            ("f", 2 | 4 | 8) => Kind::Float,
            ("i", 1 | 2 | 4 | 8) => Kind::Int,
            ("u", 1 | 2 | 4 | 8) => Kind::Uint,
            _ => return Err(unsupported()),
        };
        Ok(Self { kind, size, big_endian: order == '>' || (order == '=' && cfg!(target_endian = "big")) })
    }

    /// One element as `f32`; `b.len() == self.size`.
    fn decode(self, b: &[u8]) -> f32 {
        let mut x = [0u8; 8];
        x[..self.size].copy_from_slice(b);
        if self.big_endian {
            x[..self.size].reverse();
        }
        match (self.kind, self.size) {
            (Kind::Bool, _) => f32::from(u8::from(x[0] != 0)),
            (Kind::Float, 2) => f16_to_f32(u16::from_le_bytes([x[0], x[1]])),
            (Kind::Float, 4) => f32::from_le_bytes([x[0], x[1], x[2], x[3]]),
            (Kind::Float, _) => f64::from_le_bytes(x) as f32,
            (Kind::Int, 1) => f32::from(x[0] as i8),
            (Kind::Int, 2) => f32::from(i16::from_le_bytes([x[0], x[1]])),
            (Kind::Int, 4) => i32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f32,
            (Kind::Int, _) => i64::from_le_bytes(x) as f32,
            (Kind::Uint, _) => u64::from_le_bytes(x) as f32,
        }
    }
}

/// IEEE half precision to single (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

fn format_err(message: impl Into<String>) -> NpyError {
    NpyError::Format(message.into())
}

/// The value of `key` in numpy's header dict (`{'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3), }`), as written: a quoted string, `True`/`False` or a tuple.
fn header_value<'h>(header: &'h str, key: &str) -> Result<&'h str> {
    let quoted = [format!("'{key}'"), format!("\"{key}\"")];
    let at = quoted
        .iter()
        .find_map(|q| header.find(q.as_str()).map(|i| i + q.len()))
        .ok_or_else(|| format_err(format!("the header has no '{key}': {header}")))?;
    let rest = header[at..].trim_start();
    let rest = rest.strip_prefix(':').ok_or_else(|| format_err(format!("no ':' after '{key}'")))?.trim_start();
    let end = match rest.chars().next() {
        Some(q @ ('\'' | '"')) => rest[1..].find(q).map(|i| i + 2),
        Some('(') => rest.find(')').map(|i| i + 1),
        _ => rest.find([',', '}']),
    }
    .ok_or_else(|| format_err(format!("unterminated value of '{key}'")))?;
    Ok(rest[..end].trim())
}

fn parse_shape(tuple: &str) -> Result<Vec<u64>> {
    let inner = tuple
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format_err(format!("shape {tuple} is not a tuple")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.trim_end_matches('L').parse::<u64>().map_err(|_| format_err(format!("shape entry '{d}' in {tuple}")))
        })
        .collect()
}

/// Reads a `.npy` file's bytes.
pub fn read_npy(bytes: &[u8]) -> Result<Array> {
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| format_err("missing the \\x93NUMPY magic"))?;
    let (major, rest) = rest.split_at_checked(2).ok_or_else(|| format_err("truncated version"))?;
    let (len, rest) = match major[0] {
        1 => {
            let (l, r) = rest.split_at_checked(2).ok_or_else(|| format_err("truncated header length"))?;
            (usize::from(u16::from_le_bytes([l[0], l[1]])), r)
        }
        2 | 3 => {
            let (l, r) = rest.split_at_checked(4).ok_or_else(|| format_err("truncated header length"))?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, r)
        }
        v => return Err(format_err(format!("format version {v}.{} (moat reads 1.0, 2.0 and 3.0)", major[1]))),
    };
    if len > MAX_HEADER {
        return Err(format_err(format!("header of {len} bytes")));
    }
    let (header, data) =
        rest.split_at_checked(len).ok_or_else(|| format_err(format!("header of {len} bytes is truncated")))?;
    let header = std::str::from_utf8(header).map_err(|_| format_err("header is not text"))?;
    let descr = header_value(header, "descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = Dtype::parse(descr)?;
    if header_value(header, "fortran_order")? != "False" {
        return Err(format_err("Fortran-order array: save it with np.ascontiguousarray(a) first"));
    }
    let shape = parse_shape(header_value(header, "shape")?)?;
    let count = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| NpyError::Shape {
            shape: shape.clone(),
            message: format!("more than the {MAX_ELEMENTS} values moat reads"),
        })?;
    let need = count * dtype.size;
    if data.len() != need {
        return Err(NpyError::Shape {
            shape,
            message: format!("needs {need} bytes of '{descr}' data, the file has {}", data.len()),
        });
    }
    let values = data.chunks_exact(dtype.size).map(|b| dtype.decode(b)).collect();
    let shape = shape.into_iter().map(|d| d as usize).collect();
    Ok(Array { shape, data: values })
}

/// A `.npy` file (format 1.0, `<f4`) holding `array`.
pub fn write_npy(array: &Array) -> Vec<u8> {
    let dims: Vec<String> = array.shape.iter().map(usize::to_string).collect();
    let shape = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.extend(std::iter::repeat_n(' ', total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + array.data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(array.data.iter().flat_map(|x| x.to_le_bytes()));
    out
}

fn zip_err(message: impl Into<String>) -> NpyError {
    NpyError::Zip(message.into())
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| zip_err("truncated record"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| zip_err("truncated record"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
        .ok_or_else(|| zip_err("truncated record"))
}

/// One member of a zip archive, from its central directory entry.
struct Member {
    name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local_header: u64,
}

/// The members listed in a zip archive's central directory.
fn zip_members(zip: &[u8]) -> Result<Vec<Member>> {
    // End of central directory: the last "PK\5\6" within the final 64 KiB + 22 bytes.
    let from = zip.len().saturating_sub(22 + 0xffff);
    let eocd = (from..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| zip_err("no end-of-central-directory record"))?;
    let mut entries = u64::from(u16_at(zip, eocd + 10)?);
    let mut offset = u64::from(u32_at(zip, eocd + 16)?);
    if (entries == 0xffff || offset == 0xffff_ffff) && eocd >= 20 && zip[eocd - 20..].starts_with(b"PK\x06\x07") {
        let z64 = usize::try_from(u64_at(zip, eocd - 12)?).map_err(|_| zip_err("ZIP64 locator"))?;
        if !zip.get(z64..).is_some_and(|r| r.starts_with(b"PK\x06\x06")) {
            return Err(zip_err("bad ZIP64 end-of-central-directory record"));
        }
        entries = u64_at(zip, z64 + 32)?;
        offset = u64_at(zip, z64 + 48)?;
    }
    let mut at = usize::try_from(offset).map_err(|_| zip_err("central directory offset"))?;
    let mut members = Vec::new();
    for _ in 0..entries {
        if !zip.get(at..).is_some_and(|r| r.starts_with(b"PK\x01\x02")) {
            return Err(zip_err("damaged central directory"));
        }
        let name_len = usize::from(u16_at(zip, at + 28)?);
        let extra_len = usize::from(u16_at(zip, at + 30)?);
        let comment_len = usize::from(u16_at(zip, at + 32)?);
        let name = zip.get(at + 46..at + 46 + name_len).ok_or_else(|| zip_err("truncated member name"))?;
        let extra = zip
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(|| zip_err("truncated extra field"))?;
        let mut m = Member {
            name: String::from_utf8_lossy(name).into_owned(),
            method: u16_at(zip, at + 10)?,
            crc: u32_at(zip, at + 16)?,
            compressed: u64::from(u32_at(zip, at + 20)?),
            size: u64::from(u32_at(zip, at + 24)?),
            local_header: u64::from(u32_at(zip, at + 42)?),
        };
        // ZIP64 extended information: the 8-byte fields whose 4-byte slots are all ones, in order.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let (id, len) = (u16_at(extra, e)?, usize::from(u16_at(extra, e + 2)?));
            if id == 1 {
                let mut f = e + 4;
                for field in [&mut m.size, &mut m.compressed, &mut m.local_header] {
                    if *field == 0xffff_ffff {
                        *field = u64_at(extra, f)?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        members.push(m);
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(members)
}

/// The uncompressed bytes of one member, at most `limit` of them.
fn member_bytes(zip: &[u8], m: &Member, limit: u64) -> Result<Vec<u8>> {
    let at = usize::try_from(m.local_header).map_err(|_| zip_err("member offset"))?;
    if !zip.get(at..).is_some_and(|r| r.starts_with(b"PK\x03\x04")) {
        return Err(zip_err(format!("member '{}': bad local header", m.name)));
    }
    let start = at + 30 + usize::from(u16_at(zip, at + 26)?) + usize::from(u16_at(zip, at + 28)?);
    let len = usize::try_from(m.compressed).map_err(|_| zip_err("member size"))?;
    let raw = zip
        .get(start..start.saturating_add(len))
        .ok_or_else(|| zip_err(format!("member '{}' is truncated", m.name)))?;
    if m.size > limit {
        return Err(zip_err(format!("member '{}' declares {} bytes, more than moat reads", m.name, m.size)));
    }
    let data = match m.method {
        0 => raw.to_vec(),
        8 => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(raw)
                .take(m.size + 1)
                .read_to_end(&mut out)
                .map_err(|e| zip_err(format!("member '{}': {e}", m.name)))?;
            out
        }
        other => return Err(zip_err(format!("member '{}' uses compression method {other}", m.name))),
    };
    if data.len() as u64 != m.size {
        return Err(zip_err(format!("member '{}' holds {} bytes, not the {} declared", m.name, data.len(), m.size)));
    }
    let mut crc = flate2::Crc::new();
    crc.update(&data);
    if crc.sum() != m.crc {
        return Err(zip_err(format!("member '{}' fails its CRC-32 check", m.name)));
    }
    Ok(data)
}

/// The names of the arrays in a `.npz` (members without their `.npy` suffix).
pub fn npz_names(zip: &[u8]) -> Result<Vec<String>> {
    Ok(zip_members(zip)?.into_iter().map(|m| m.name.trim_end_matches(".npy").to_string()).collect())
}

/// Reads array `name` of a `.npz`, or its only array when `name` is `None`.
pub fn read_npz(zip: &[u8], name: Option<&str>) -> Result<Array> {
    let members = zip_members(zip)?;
    let available: Vec<String> = members.iter().map(|m| m.name.trim_end_matches(".npy").to_string()).collect();
    let member = match name {
        Some(n) => members.iter().find(|m| m.name.trim_end_matches(".npy") == n),
        None if members.len() == 1 => members.first(),
        None => {
            return Err(NpyError::MissingArray { name: "(none given: name one)".into(), available });
        }
    };
    let member = member.ok_or_else(|| NpyError::MissingArray { name: name.unwrap_or_default().into(), available })?;
    read_npy(&member_bytes(zip, member, (MAX_ELEMENTS as u64) * 8 + MAX_HEADER as u64 + 16)?)
}

/// A `.npz` archive (stored members) holding `arrays` by name.
pub fn write_npz(arrays: &[(&str, &Array)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, array) in arrays {
        let data = write_npy(array);
        let file = format!("{name}.npy");
        let (size, offset) = match (u32::try_from(data.len()), u32::try_from(out.len())) {
            (Ok(s), Ok(o)) if s < u32::MAX && o < u32::MAX => (s, o),
            _ => return Err(zip_err("archives over 4 GiB are not written")),
        };
        let name_len = u16::try_from(file.len()).map_err(|_| zip_err("array name too long"))?;
        let mut crc = flate2::Crc::new();
        crc.update(&data);
        // Version needed 2.0, no flags, stored, no time stamp.
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
            v.extend_from_slice(&crc.sum().to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&name_len.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
        };
        out.extend_from_slice(b"PK\x03\x04");
        common(&mut out);
        out.extend_from_slice(file.as_bytes());
        out.extend_from_slice(&data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 3]);
        common(&mut central);
        central.extend_from_slice(&[0; 10]); // comment length, disk, internal and external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(file.as_bytes());
    }
    let count = u16::try_from(arrays.len()).map_err(|_| zip_err("too many arrays"))?;
    let (dir_size, dir_offset) = (central.len() as u32, out.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&dir_size.to_le_bytes());
    out.extend_from_slice(&dir_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_every_numeric_dtype() -> Result<()> {
        let f8: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(read_npy(&npy("<f8", "(2,)", &f8))?.data(), [1.5, -2.0]);
        let be: Vec<u8> = [3.25f32].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(read_npy(&npy(">f4", "(1, 1)", &be))?, Array::new(vec![1, 1], vec![3.25])?);
        assert_eq!(read_npy(&npy("|u1", "(3,)", &[0, 7, 255]))?.data(), [0.0, 7.0, 255.0]);
        assert_eq!(read_npy(&npy("|i1", "(2,)", &[0xff, 2]))?.data(), [-1.0, 2.0]);
        assert_eq!(read_npy(&npy("<i8", "(1,)", &(-5i64).to_le_bytes()))?.data(), [-5.0]);
        assert_eq!(read_npy(&npy("|b1", "(2,)", &[1, 0]))?.data(), [1.0, 0.0]);
        // 0x3c00 = 1.0, 0xc000 = -2.0, 0x0001 = the smallest subnormal.
        assert_eq!(read_npy(&npy("<f2", "(3,)", &[0, 0x3c, 0, 0xc0, 1, 0]))?.data(), [1.0, -2.0, 2f32.powi(-24)]);
        // A scalar has shape () and one value.
        assert_eq!(read_npy(&npy("<f4", "()", &2.0f32.to_le_bytes()))?.shape(), &[] as &[usize]);
        Ok(())
    }

    #[test]
    fn hostile_files_are_clear_errors() {
        let four = 1.0f32.to_le_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04 not npy".to_vec(), "magic"),
            (MAGIC[..4].to_vec(), "magic"),
            (npy("<f4", "(2,)", &four), "needs 8 bytes"),
            (npy("<f4", "(1,)", &[four, four].concat()), "needs 4 bytes"),
            (npy("<c8", "(1,)", &[0; 8]), "unsupported dtype '<c8'"),
            (npy("<U3", "(1,)", &[0; 12]), "unsupported dtype"),
            (npy("|O", "(1,)", &[0; 8]), "unsupported dtype"),
            (npy("<f4", "(4294967296, 4294967296, 16)", &four), "more than the"),
            (npy("<f4", "(18446744073709551615, 2)", &four), "more than the"),
            (npy("<f4", "(-1,)", &four), "shape entry"),
            (npy("<f4", "[1]", &four), "not a tuple"),
            (npy("<f4", "(1,", &four), "unterminated"),
        ];
        for (bytes, needle) in cases {
            let err = read_npy(&bytes).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "expected '{needle}' in '{err}'");
        }
        let mut fortran = npy("<f4", "(1,)", &four);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap_or(0);
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert!(read_npy(&fortran).is_err_and(|e| e.to_string().contains("Fortran")));
        let mut big_header = MAGIC.to_vec();
        big_header.extend_from_slice(&[2, 0]);
        big_header.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_npy(&big_header).is_err_and(|e| e.to_string().contains("header of")));
        // Every truncation of a valid file is an error, never a panic.
        let good = write_npy(&Array { shape: vec![2, 2], data: vec![1.0, 2.0, 3.0, 4.0] });
        for n in 0..good.len() {
            assert!(read_npy(&good[..n]).is_err(), "truncated to {n}");
        }
    }

    #[test]
    fn npy_and_npz_round_trip() -> Result<()> {
        let a = Array::new(vec![2, 1, 3], (0..6).map(|i| i as f32 * 0.5 - 1.0).collect())?;
        let b = Array::new(vec![4], vec![f32::MAX, f32::MIN_POSITIVE, -0.0, 7.0])?;
        let bytes = write_npy(&a);
        assert_eq!((bytes.len() - 6 * 4) % 64, 0, "the data starts 64-byte aligned");
        assert_eq!(read_npy(&bytes)?, a);
        assert_eq!(read_npy(&write_npy(&b))?, b);
        let zip = write_npz(&[("x", &a), ("probs", &b)])?;
        assert_eq!(npz_names(&zip)?, ["x", "probs"]);
        assert_eq!(read_npz(&zip, Some("probs"))?, b);
        assert_eq!(read_npz(&zip, Some("x"))?, a);
        assert!(matches!(read_npz(&zip, Some("y")), Err(NpyError::MissingArray { .. })));
        assert!(matches!(read_npz(&zip, None), Err(NpyError::MissingArray { .. })));
        assert_eq!(read_npz(&write_npz(&[("only", &b)])?, None)?, b);
        // A flipped data byte fails the CRC; truncations are errors.
        let mut bad = zip.clone();
        bad[100] ^= 1;
        assert!(read_npz(&bad, Some("x")).is_err());
        for n in 0..zip.len() {
            assert!(read_npz(&zip[..n], Some("probs")).is_err(), "truncated to {n}");
        }
        assert!(Array::new(vec![2, 2], vec![1.0]).is_err());
        Ok(())
    }
}
