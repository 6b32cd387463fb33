//! `torch.save` containers: the zip archive (`<name>/data.pkl` and one `<name>/data/<key>`
//! entry per storage) and the legacy stream (`_use_new_zipfile_serialization=False`: magic
//! number, protocol and system-info pickles, the object's pickle, the storage key list, then
//! each storage as an `i64` element count and its bytes). [`open`] parses the object's pickle
//! and hands back [`Storages`], which reads each storage's bytes on demand.
//!
//! Every length is checked against what the file (or zip entry) holds before anything is
//! allocated; zip entries are read whole, so that their CRC is checked.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::pickle::{self, Id, Obj, Pickle};
use crate::{Error, Result};

/// Opens a `torch.save` file of either format: the parsed object and its storages.
pub(crate) fn open(path: &Path) -> Result<(Pickle, Storages)> {
    let fail = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (mut file, file_len) = super::open_file(path)?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head).map_err(|e| Error::io(path, e))?;
    let (pk, mut source) = match head.get(..n) {
        Some([]) => return Err(fail("the file is empty".into())),
        Some([b'P', b'K', 3, 4]) => open_zip(file, file_len).map_err(fail)?,
        Some([0x80, ..]) => {
            drop(file);
            let bytes = super::read_file(path, u64::MAX)?;
            open_legacy(bytes).map_err(fail)?
        }
        _ => {
            return Err(fail(
                "neither a zip archive nor a pickle stream (not written by torch.save)".into(),
            ));
        }
    };
    let mut infos = storage_infos(&pk).map_err(fail)?;
    match &mut source {
        Source::Legacy { ranges, .. } => {
            for (key, info) in &mut infos {
                // The element count written next to the data is what PyTorch loads.
                if let Some(&(_, len)) = ranges.get(key) {
                    info.numel = len as u64 / info.dtype.size();
                }
            }
        }
        // Every declared storage must be in the archive with at least its declared size, so
        // that nothing (here or in burn-store's reader) allocates for data the file lacks.
        Source::Zip { archive, prefix } => {
            let mut keys: Vec<_> = infos.iter().filter(|(_, i)| i.numel > 0).collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (key, info) in keys {
                let name = format!("{prefix}data/{key}");
                let need = info
                    .numel
                    .checked_mul(info.dtype.size())
                    .ok_or_else(|| fail(format!("storage '{key}' size overflows")))?;
                let entry = archive
                    .by_name(&name)
                    .map_err(|e| fail(format!("zip entry '{name}': {e}")))?;
                check_entry_size(
                    &name,
                    entry.size(),
                    entry.compressed_size(),
                    entry.compression(),
                    need,
                )
                .map_err(fail)?;
            }
        }
    }
    let storages = Storages {
        infos,
        source,
        cache: HashMap::new(),
        file_len,
    };
    Ok((pk, storages))
}

/// The storages of an opened file, by key.
pub(crate) struct Storages {
    infos: HashMap<String, StorageInfo>,
    source: Source,
    cache: HashMap<String, Vec<u8>>,
    file_len: u64,
}

impl Storages {
    /// Dtype and element count of storage `key`, if the pickle references it.
    pub(crate) fn info(&self, key: &str) -> Option<StorageInfo> {
        self.infos.get(key).copied()
    }

    /// Size of the file in bytes.
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The bytes of storage `key` (read from the archive once, then cached).
    pub(crate) fn bytes(&mut self, key: &str) -> Result<&[u8], String> {
        let info = self.infos.get(key).copied().ok_or("unknown storage")?;
        let need = info
            .numel
            .checked_mul(info.dtype.size())
            .ok_or_else(|| format!("storage '{}' size overflows", key))?;
        match &mut self.source {
            Source::Legacy { bytes, ranges } => {
                let &(start, len) = ranges
                    .get(key)
                    .ok_or_else(|| format!("storage '{}' is missing from the file", key))?;
                bytes
                    .get(start..start + len.min(need as usize))
                    .ok_or_else(|| format!("storage '{}' is outside the file", key))
            }
            Source::Zip { archive, prefix } => {
                if !self.cache.contains_key(key) {
                    let name = format!("{prefix}data/{}", key);
                    let data = read_entry(archive, &name, need)?;
                    self.cache.insert(key.to_string(), data);
                }
                Ok(self.cache.get(key).map(Vec::as_slice).unwrap_or_default())
            }
        }
    }
}

/// Element type of a storage (`torch.<Name>Storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    QInt8,
    QUInt8,
    QInt32,
}

impl DType {
    pub(crate) fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" | "UntypedStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            "QInt8Storage" => DType::QInt8,
            "QUInt8Storage" => DType::QUInt8,
            "QInt32Storage" => DType::QInt32,
            _ => return None,
        })
    }

    pub(crate) fn size(self) -> u64 {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 | DType::QInt32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool | DType::QInt8 | DType::QUInt8 => 1,
        }
    }

    pub(crate) fn is_quantized(self) -> bool {
        matches!(self, DType::QInt8 | DType::QUInt8 | DType::QInt32)
    }
}

/// A storage as the pickle's persistent ids declare it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StorageInfo {
    /// Element type.
    pub(crate) dtype: DType,
    /// Elements available (from the persistent id; for legacy files, from the file).
    pub(crate) numel: u64,
}

/// Where storage bytes come from.
enum Source {
    Zip {
        archive: zip::ZipArchive<File>,
        /// Archive directory with a trailing `/` (`archive/`, or the saved file's stem).
        prefix: String,
    },
    Legacy {
        bytes: Vec<u8>,
        /// Byte range of each storage's data, by key.
        ranges: HashMap<String, (usize, usize)>,
    },
}

/// Largest `data.pkl` accepted (a state dict's pickle is ~150 bytes per tensor).
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// Deflate cannot expand data more than ~1032 times; a larger claim is a lie.
const MAX_DEFLATE_RATIO: u64 = 1100;
/// `torch.serialization.MAGIC_NUMBER` and `PROTOCOL_VERSION` of the legacy format.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// Reads a zip entry whole (so that its CRC is checked), refusing one smaller than `need`
/// bytes or larger than deflate can make of its compressed size.
fn read_entry(
    archive: &mut zip::ZipArchive<File>,
    name: &str,
    need: u64,
) -> Result<Vec<u8>, String> {
    let entry = archive
        .by_name(name)
        .map_err(|e| format!("zip entry '{name}': {e}"))?;
    let size = entry.size();
    check_entry_size(
        name,
        size,
        entry.compressed_size(),
        entry.compression(),
        need,
    )?;
    let mut out = Vec::new();
    entry
        .take(size.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("zip entry '{name}': {e}"))?;
    if out.len() as u64 != size {
        return Err(format!(
            "zip entry '{name}' holds {} bytes, not the {size} its header declares",
            out.len()
        ));
    }
    Ok(out)
}

/// Refuses a zip entry smaller than `need` bytes or larger than deflate can make of its
/// compressed size.
fn check_entry_size(
    name: &str,
    size: u64,
    compressed: u64,
    method: zip::CompressionMethod,
    need: u64,
) -> Result<(), String> {
    if size < need {
        return Err(format!(
            "zip entry '{name}' holds {size} bytes, but {need} are declared"
        ));
    }
    let stored = method == zip::CompressionMethod::Stored;
    if (stored && size != compressed)
        || size
            > compressed
                .saturating_mul(MAX_DEFLATE_RATIO)
                .saturating_add(1024)
    {
        return Err(format!(
            "zip entry '{name}' claims {size} bytes from {compressed} compressed"
        ));
    }
    Ok(())
}

fn open_zip(file: File, file_len: u64) -> Result<(Pickle, Source), String> {
    // torch.save archives start at byte 0. Saying so also sidesteps zip 9.8's offset detection,
    // which ignores the ZIP64 end records PyTorch always writes and, when the first entry's
    // name is 30 bytes long (a 21-character archive name), takes the second central-directory
    // header for the first ("Invalid Central Directory header").
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut archive = zip::ZipArchive::with_config(config, file)
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    let pkl = archive
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(|n| n.into_owned())
        .ok_or("zip archive has no '<name>/data.pkl' (not written by torch.save)")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Some(i) = archive.index_for_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        archive
            .by_index(i)
            .map_err(|e| e.to_string())?
            .take(16)
            .read_to_string(&mut order)
            .map_err(|e| format!("zip entry '{prefix}byteorder': {e}"))?;
        if order != "little" {
            return Err(format!(
                "byte order '{order}' is not supported (only little-endian checkpoints)"
            ));
        }
    }
    let size = archive
        .by_name(&pkl)
        .map_err(|e| format!("zip entry '{pkl}': {e}"))?
        .size();
    if size > MAX_PICKLE_BYTES.min(file_len.saturating_mul(MAX_DEFLATE_RATIO)) {
        return Err(format!(
            "'{pkl}' declares {size} bytes, too large for a state dict"
        ));
    }
    let bytes = read_entry(&mut archive, &pkl, 0)?;
    let (pk, _) = pickle::parse(&bytes, 0).map_err(|e| format!("{pkl}: {e}"))?;
    Ok((pk, Source::Zip { archive, prefix }))
}

fn open_legacy(bytes: Vec<u8>) -> Result<(Pickle, Source), String> {
    let header = |pos: usize, what: &str| {
        pickle::parse(&bytes, pos).map_err(|e| format!("legacy {what} pickle: {e}"))
    };
    let (magic, pos) = header(0, "magic-number")?;
    if magic.get(magic.root()) != &Obj::Int(LEGACY_MAGIC) {
        return Err("a pickle without torch.save's magic number (not a checkpoint)".into());
    }
    let (proto, pos) = header(pos, "protocol")?;
    if proto.get(proto.root()) != &Obj::Int(LEGACY_PROTOCOL) {
        return Err(format!(
            "legacy protocol {} is not supported (expected {LEGACY_PROTOCOL})",
            proto.describe(proto.root())
        ));
    }
    let (sys, pos) = header(pos, "system-info")?;
    if let Obj::Dict(items) = sys.get(sys.root()) {
        let big = items.iter().any(|&(k, v)| {
            sys.get(k) == &Obj::Str("little_endian".into()) && sys.get(v) == &Obj::Bool(false)
        });
        if big {
            return Err("big-endian checkpoints are not supported".into());
        }
    }
    let (pk, pos) = header(pos, "state")?;
    let (keys, mut pos) = header(pos, "storage-key")?;
    let Obj::List(ids) = keys.get(keys.root()) else {
        return Err("legacy storage-key pickle is not a list".into());
    };
    let infos = storage_infos(&pk)?;
    let mut ranges = HashMap::new();
    for &id in ids {
        let key = key_string(&keys, id)?;
        let info = infos
            .get(&key)
            .ok_or_else(|| format!("storage '{key}' is listed but no tensor uses it"))?;
        let count = bytes
            .get(pos..pos.saturating_add(8))
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_le_bytes)
            .ok_or_else(|| format!("truncated before storage '{key}'"))?;
        let start = pos + 8;
        let len = u64::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(info.dtype.size()))
            .filter(|&n| n <= (bytes.len() - start) as u64)
            .ok_or_else(|| {
                format!(
                    "storage '{key}' declares {count} elements of {:?}, more than the {} bytes left",
                    info.dtype,
                    bytes.len() - start
                )
            })? as usize;
        ranges.insert(key, (start, len));
        pos = start + len;
    }
    Ok((pk, Source::Legacy { bytes, ranges }))
}

/// A storage key: a string (or, in old files, an int).
fn key_string(pk: &Pickle, id: Id) -> Result<String, String> {
    match pk.get(id) {
        Obj::Str(s) => Ok(s.clone()),
        Obj::Int(i) => Ok(i.to_string()),
        _ => Err(format!("storage key is a {}", pk.describe(id))),
    }
}

/// A decoded persistent id: `('storage', torch.<T>Storage, key, location, numel[, view])`.
pub(crate) struct StorageRef {
    /// Storage key (the zip entry name under `data/`, or the legacy record key).
    pub(crate) key: String,
    /// Element type.
    pub(crate) dtype: DType,
    /// Elements in the storage.
    pub(crate) numel: u64,
    /// Legacy storage views: `(offset, numel)` in elements of the root storage.
    pub(crate) view: Option<(u64, u64)>,
}

pub(crate) fn storage_ref(pk: &Pickle, pid: Id) -> Result<StorageRef, String> {
    let Obj::Tuple(t) = pk.get(pid) else {
        return Err(format!(
            "persistent id is a {}, not a tuple",
            pk.describe(pid)
        ));
    };
    let [tag, ty, key, _location, numel, rest @ ..] = t.as_slice() else {
        return Err(format!(
            "persistent id has {} fields, expected 5 or 6",
            t.len()
        ));
    };
    if pk.get(*tag) != &Obj::Str("storage".into()) {
        return Err(format!(
            "persistent id of a {} (only storages are read)",
            pk.describe(*tag)
        ));
    }
    let dtype = match pk.get(*ty) {
        Obj::Global { module, name } if module == "torch" => DType::from_storage(name),
        _ => None,
    }
    .ok_or_else(|| format!("unsupported storage type {}", pk.describe(*ty)))?;
    let view = match rest {
        [] => None,
        [v] if pk.get(*v) == &Obj::None => None,
        [v] => match pk.get(*v) {
            Obj::Tuple(m) if m.len() == 3 => Some((pk.as_u64(m[1])?, pk.as_u64(m[2])?)),
            _ => return Err(format!("storage view metadata is a {}", pk.describe(*v))),
        },
        _ => return Err("persistent id has more than 6 fields".into()),
    };
    Ok(StorageRef {
        key: key_string(pk, *key)?,
        dtype,
        numel: pk.as_u64(*numel)?,
        view,
    })
}

/// Every storage the pickle references, checked for one dtype per storage.
fn storage_infos(pk: &Pickle) -> Result<HashMap<String, StorageInfo>, String> {
    let mut infos: HashMap<String, StorageInfo> = HashMap::new();
    for obj in pk.objects() {
        let Obj::PersId(pid) = obj else { continue };
        let r = storage_ref(pk, *pid)?;
        let info = StorageInfo {
            dtype: r.dtype,
            numel: r.numel,
        };
        match infos.get(&r.key) {
            Some(old) if old.dtype != r.dtype => {
                return Err(format!(
                    "storage '{}' is used as both {:?} and {:?}",
                    r.key, old.dtype, r.dtype
                ));
            }
            Some(old) if old.numel >= r.numel => {}
            _ => {
                infos.insert(r.key, info);
            }
        }
    }
    Ok(infos)
}
