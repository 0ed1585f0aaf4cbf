//! Trace readers: every format of `../shared/traces/README.md` plus libCacheSim's
//! `oracleGeneral` binary. A trace is a sequence of 64-bit keys (every object has size 1).
//!
//! | format | encoding |
//! |---|---|
//! | [`Format::Txt`] | one decimal key per line; blank lines and lines starting with `*` (LIRS checkpoints) are skipped |
//! | [`Format::Be32`] | raw stream of big-endian `u32` keys |
//! | [`Format::Be64`] | raw stream of big-endian `u64` keys |
//! | [`Format::Addr`] | text lines `<op> 0x<hex address> <n>`; the key is the address |
//! | [`Format::OracleGeneral`] | 24-byte little-endian records `{u32 clock_time, u64 obj_id, u32 obj_size, i64 next_access_vtime}`; the key is `obj_id` |
//!
//! Any of them may be gzip- or xz-compressed; compression is recognised by the magic bytes,
//! not the name. The format is given explicitly or detected from the path ([`detect_format`]):
//! the folder names of the shared trace collection first, then the file name, then a look at
//! the first bytes.
//!
//! Reading is streaming ([`KeyReader`] is an iterator over `Result<u64, TraceError>`);
//! [`read_trace`] collects the keys into a [`Trace`].

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Size of one libCacheSim `oracleGeneral` record in bytes.
pub const ORACLE_GENERAL_RECORD_BYTES: usize = 24;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The on-disk encoding of the keys of a trace (after decompression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One decimal key per line (`*` lines and blank lines ignored).
    Txt,
    /// Raw big-endian 32-bit keys.
    Be32,
    /// Raw big-endian 64-bit keys.
    Be64,
    /// `<op> 0x<hex address> <n>` lines; the key is the address.
    Addr,
    /// libCacheSim `oracleGeneral`: 24-byte little-endian records; the key is `obj_id`.
    OracleGeneral,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Txt,
        Format::Be32,
        Format::Be64,
        Format::Addr,
        Format::OracleGeneral,
    ];

    /// The name used by `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Be32 => "be32",
            Format::Be64 => "be64",
            Format::Addr => "addr",
            Format::OracleGeneral => "oracle-general",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "txt" | "text" => Ok(Format::Txt),
            "be32" => Ok(Format::Be32),
            "be64" => Ok(Format::Be64),
            "addr" | "address" => Ok(Format::Addr),
            "oracle-general" | "oraclegeneral" | "oracle_general" => Ok(Format::OracleGeneral),
            _ => Err(format!(
                "unknown trace format {text:?}; expected one of: txt, be32, be64, addr, oracle-general"
            )),
        }
    }
}

/// Compression of a trace file, recognised from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
}

/// Everything that can go wrong reading a trace. Messages name the file and say what to do.
#[derive(Debug)]
pub enum TraceError {
    /// The file could not be opened or read.
    Io { path: PathBuf, source: io::Error },
    /// Reading the (decompressed) stream failed part-way: truncated or corrupt data.
    Corrupt { path: PathBuf, source: io::Error },
    /// The format could not be told from the path or the content.
    UnknownFormat { path: PathBuf },
    /// A compression we cannot read.
    UnsupportedCompression { path: PathBuf, what: &'static str },
    /// A text line that is not a key of the format.
    BadLine {
        path: PathBuf,
        format: Format,
        line_number: u64,
        line: String,
    },
    /// A binary trace whose length is not a multiple of its record size.
    Truncated {
        path: PathBuf,
        format: Format,
        record_bytes: usize,
        trailing_bytes: usize,
    },
    /// The trace holds no request.
    Empty { path: PathBuf },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io { path, source } => {
                write!(f, "cannot read trace {}: {source}", path.display())?;
                if source.kind() == io::ErrorKind::NotFound {
                    write!(f, " (check the --trace path)")?;
                }
                Ok(())
            }
            TraceError::Corrupt { path, source } => write!(
                f,
                "trace {} is truncated or corrupt: {source} (is the gzip/xz file complete?)",
                path.display()
            ),
            TraceError::UnknownFormat { path } => write!(
                f,
                "cannot tell the format of trace {}; pass --format with one of: txt, be32, be64, addr, oracle-general",
                path.display()
            ),
            TraceError::UnsupportedCompression { path, what } => write!(
                f,
                "trace {} is {what}-compressed, which sim cannot read; decompress it first (gzip and xz are supported)",
                path.display()
            ),
            TraceError::BadLine {
                path,
                format,
                line_number,
                line,
            } => {
                let shown: String = line.chars().take(60).collect();
                write!(
                    f,
                    "trace {} line {line_number}: {shown:?} is not a {format} record{}; is --format right?",
                    path.display(),
                    match format {
                        Format::Txt => " (expected one decimal key per line)",
                        Format::Addr => " (expected `<op> 0x<hex address> <n>`)",
                        _ => "",
                    }
                )
            }
            TraceError::Truncated {
                path,
                format,
                record_bytes,
                trailing_bytes,
            } => write!(
                f,
                "trace {} is not a whole number of {record_bytes}-byte {format} records ({trailing_bytes} bytes left over): truncated or corrupt file, or wrong --format",
                path.display()
            ),
            TraceError::Empty { path } => {
                write!(f, "trace {} holds no request", path.display())
            }
        }
    }
}

impl std::error::Error for TraceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TraceError::Io { source, .. } | TraceError::Corrupt { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A trace loaded into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Display name (usually the path as given).
    pub name: String,
    pub format: Format,
    pub keys: Vec<u64>,
}

impl Trace {
    pub fn requests(&self) -> usize {
        self.keys.len()
    }

    /// Number of distinct keys.
    pub fn unique_keys(&self) -> usize {
        count_unique(&self.keys)
    }
}

/// Number of distinct keys in `keys`.
pub fn count_unique(keys: &[u64]) -> usize {
    keys.iter().collect::<HashSet<_>>().len()
}

/// Detects the compression from the first bytes of `input` without consuming them.
pub fn sniff_compression<R: BufRead>(input: &mut R) -> io::Result<Option<Compression>> {
    let head = input.fill_buf()?;
    if head.starts_with(GZIP_MAGIC) {
        Ok(Some(Compression::Gzip))
    } else if head.len() >= XZ_MAGIC.len() && head.starts_with(XZ_MAGIC) {
        Ok(Some(Compression::Xz))
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(None)
    } else {
        Ok(Some(Compression::None))
    }
}

/// Wraps `input` in the decompressor its magic bytes call for. `path` only names the file in
/// errors.
pub fn decompress<'a, R: BufRead + 'a>(
    mut input: R,
    path: &Path,
) -> Result<Box<dyn BufRead + 'a>, TraceError> {
    let io_error = |source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    };
    match sniff_compression(&mut input).map_err(io_error)? {
        Some(Compression::Gzip) => Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(input),
        ))),
        Some(Compression::Xz) => Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            xz2::bufread::XzDecoder::new_multi_decoder(input),
        ))),
        Some(Compression::None) => Ok(Box::new(input)),
        None => Err(TraceError::UnsupportedCompression {
            path: path.to_path_buf(),
            what: "zstd",
        }),
    }
}

/// The format a path implies, from the shared trace collection's folder names and then the
/// file name. `None` when the path says nothing (then [`detect_format`] looks at the bytes).
pub fn format_from_path(path: &Path) -> Option<Format> {
    let text = path.to_string_lossy().replace('\\', "/");
    let lower = text.to_ascii_lowercase();
    let file_name = lower.rsplit('/').next().unwrap_or(&lower);
    if file_name.contains("oraclegeneral") {
        return Some(Format::OracleGeneral);
    }
    let folders: Vec<&str> = lower.split('/').collect();
    let in_folder = |name: &str| folders[..folders.len().saturating_sub(1)].contains(&name);
    if in_folder("cache2k") || in_folder("cloud_physics") {
        return Some(Format::Be32);
    }
    if in_folder("corda") || in_folder("scarab") {
        return Some(Format::Be64);
    }
    if in_folder("address") {
        return Some(Format::Addr);
    }
    if in_folder("lirs") {
        return Some(Format::Txt);
    }
    let stem = strip_compression_suffix(file_name);
    if stem.ends_with(".txt") || stem.ends_with(".csv") {
        return Some(Format::Txt);
    }
    None
}

fn strip_compression_suffix(name: &str) -> &str {
    for suffix in [".gz", ".xz", ".zst"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return stem;
        }
    }
    name
}

/// Guesses the format from the first decompressed bytes: text of digits is `txt`, text lines
/// of `<op> 0x<hex> <n>` are `addr`. Binary content cannot be told apart reliably, so it
/// gives `None`.
pub fn format_from_content(head: &[u8]) -> Option<Format> {
    if head.is_empty() {
        return None;
    }
    // Cut at the last newline so a partial line does not count against the guess.
    let whole = match head.iter().rposition(|&b| b == b'\n') {
        Some(end) => &head[..=end],
        None => head,
    };
    let text = std::str::from_utf8(whole).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('*'))
        .collect();
    if lines.is_empty() {
        return None;
    }
    if lines.iter().all(|l| parse_txt_key(l).is_some()) {
        return Some(Format::Txt);
    }
    if lines.iter().all(|l| parse_addr_key(l).is_some()) {
        return Some(Format::Addr);
    }
    None
}

/// The format of the trace at `path`: from the path if it says, else from the content.
pub fn detect_format(path: &Path) -> Result<Format, TraceError> {
    if let Some(format) = format_from_path(path) {
        return Ok(format);
    }
    let file = open_file(path)?;
    let mut input = decompress(BufReader::new(file), path)?;
    let mut head = Vec::with_capacity(4096);
    input
        .by_ref()
        .take(4096)
        .read_to_end(&mut head)
        .map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    format_from_content(&head).ok_or_else(|| TraceError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

fn open_file(path: &Path) -> Result<File, TraceError> {
    File::open(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_txt_key(line: &str) -> Option<u64> {
    // Digits only (`u64::from_str` would also take a leading `+`).
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    line.parse::<u64>().ok()
}

fn parse_addr_key(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    let _op = fields.next()?;
    let address = fields.next()?;
    let hex = address
        .strip_prefix("0x")
        .or_else(|| address.strip_prefix("0X"))?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A streaming reader of the keys of one trace.
pub struct KeyReader<'a> {
    input: Box<dyn BufRead + 'a>,
    format: Format,
    path: PathBuf,
    line: Vec<u8>,
    line_number: u64,
    done: bool,
}

impl<'a> KeyReader<'a> {
    /// Reads keys of `format` from `input`, decompressing it if its magic bytes say so.
    /// `name` names the source in errors.
    pub fn new<R: BufRead + 'a>(
        input: R,
        format: Format,
        name: impl Into<PathBuf>,
    ) -> Result<Self, TraceError> {
        let path = name.into();
        let input = decompress(input, &path)?;
        Ok(KeyReader {
            input,
            format,
            path,
            line: Vec::new(),
            line_number: 0,
            done: false,
        })
    }

    /// Opens the file at `path`; the format is `format` or detected ([`detect_format`]).
    pub fn open(path: &Path, format: Option<Format>) -> Result<KeyReader<'static>, TraceError> {
        let format = match format {
            Some(format) => format,
            None => detect_format(path)?,
        };
        let file = open_file(path)?;
        KeyReader::new(BufReader::with_capacity(1 << 16, file), format, path)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    fn io_error(&self, source: io::Error) -> TraceError {
        TraceError::Corrupt {
            path: self.path.clone(),
            source,
        }
    }

    fn next_text(&mut self) -> Option<Result<u64, TraceError>> {
        loop {
            self.line.clear();
            match self.input.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) if source.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Some(Err(self.io_error(source))),
            }
            self.line_number += 1;
            let bad_line = |shown: String| TraceError::BadLine {
                path: self.path.clone(),
                format: self.format,
                line_number: self.line_number,
                line: shown,
            };
            let Ok(text) = std::str::from_utf8(&self.line) else {
                return Some(Err(bad_line("<not UTF-8 text>".to_string())));
            };
            let line = text.trim();
            if line.is_empty() || line.starts_with('*') {
                continue;
            }
            let key = match self.format {
                Format::Txt => parse_txt_key(line),
                _ => parse_addr_key(line),
            };
            return Some(key.ok_or_else(|| bad_line(line.to_string())));
        }
    }

    fn next_binary(&mut self) -> Option<Result<u64, TraceError>> {
        let record_bytes = match self.format {
            Format::Be32 => 4,
            Format::Be64 => 8,
            _ => ORACLE_GENERAL_RECORD_BYTES,
        };
        let mut record = [0u8; ORACLE_GENERAL_RECORD_BYTES];
        let record = &mut record[..record_bytes];
        let mut filled = 0;
        while filled < record_bytes {
            match self.input.read(&mut record[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(source) if source.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Some(Err(self.io_error(source))),
            }
        }
        if filled == 0 {
            return None;
        }
        if filled < record_bytes {
            return Some(Err(TraceError::Truncated {
                path: self.path.clone(),
                format: self.format,
                record_bytes,
                trailing_bytes: filled,
            }));
        }
        let key = match self.format {
            Format::Be32 => u64::from(u32::from_be_bytes(record[..4].try_into().unwrap())),
            Format::Be64 => u64::from_be_bytes(record[..8].try_into().unwrap()),
            // {u32 clock_time, u64 obj_id, u32 obj_size, i64 next_access_vtime}
            _ => u64::from_le_bytes(record[4..12].try_into().unwrap()),
        };
        Some(Ok(key))
    }
}

impl Iterator for KeyReader<'_> {
    type Item = Result<u64, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.format {
            Format::Txt | Format::Addr => self.next_text(),
            Format::Be32 | Format::Be64 | Format::OracleGeneral => self.next_binary(),
        };
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Reads every key of the trace at `path` (format given or detected). An empty trace is an
/// error.
pub fn read_trace(path: &Path, format: Option<Format>) -> Result<Trace, TraceError> {
    let reader = KeyReader::open(path, format)?;
    let format = reader.format();
    let keys = reader.collect::<Result<Vec<u64>, TraceError>>()?;
    if keys.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Trace {
        name: path.display().to_string(),
        format,
        keys,
    })
}

/// Reads every key from in-memory bytes (possibly compressed). `name` is used in errors and as
/// the trace's name.
pub fn read_bytes(bytes: &[u8], format: Format, name: &str) -> Result<Trace, TraceError> {
    let keys = KeyReader::new(bytes, format, name)?.collect::<Result<Vec<u64>, TraceError>>()?;
    if keys.is_empty() {
        return Err(TraceError::Empty {
            path: PathBuf::from(name),
        });
    }
    Ok(Trace {
        name: name.to_string(),
        format,
        keys,
    })
}

/// Encodes `keys` as libCacheSim `oracleGeneral` records (clock_time 0, size 1,
/// next_access_vtime = index of the key's next request, or -1 when there is none).
pub fn encode_oracle_general(keys: &[u64]) -> Vec<u8> {
    let next_use = crate::policies::next_use_positions(keys);
    let mut out = Vec::with_capacity(keys.len() * ORACLE_GENERAL_RECORD_BYTES);
    for (&key, &next) in keys.iter().zip(&next_use) {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        let next = if next == usize::MAX { -1 } else { next as i64 };
        out.extend_from_slice(&next.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
