//! The codecs a magic v2 record batch may be compressed with, for the places
//! where a broker must look inside a batch (offset and sequence checks on
//! compacted topics, control records, tests) or write one (builders).
//!
//! The codec sits in bits 0-2 of the batch attributes:
//!
//! | id | codec  | format on the wire                                        |
//! |----|--------|-----------------------------------------------------------|
//! | 0  | none   | the records as they are                                   |
//! | 1  | gzip   | RFC 1952 gzip (one or more members)                       |
//! | 2  | snappy | snappy-java's "xerial" framing, or a raw snappy block     |
//! | 3  | lz4    | the LZ4 *frame* format (magic `04 22 4D 18`)              |
//! | 4  | zstd   | standard zstd frames (magic `28 B5 2F FD`)                |
//!
//! Ids 5-7 are not defined by Kafka; [`Compression::from_attributes`] refuses
//! them with [`CompressionError::UnknownCodec`].
//!
//! # Snappy framing
//!
//! The Java client compresses through snappy-java's `SnappyOutputStream`,
//! which writes the xerial framing: a 16-byte header (the magic
//! `82 'SNAPPY' 00`, then a version and a minimum compatible version, both
//! big-endian i32 equal to 1), then blocks, each a big-endian u32 length and
//! one raw snappy block of at most 32 KiB of input. Other clients (librdkafka
//! among them) may send a single raw snappy block with no framing at all.
//!
//! * Decompression accepts both. A buffer that starts with the 8 magic bytes
//!   is read as xerial blocks; anything else is read as one raw block. That is
//!   the rule snappy-java's `SnappyInputStream` itself applies, so Ferry reads
//!   exactly what a Java broker or consumer reads.
//! * Compression writes the xerial framing with 32 KiB blocks, the same bytes
//!   a Java producer writes. Java consumers read it natively, librdkafka and
//!   kafka-python detect the header, and raw snappy would only be safe for
//!   Java consumers by way of snappy-java's fallback path.
//!
//! # Bounds
//!
//! Every decompression takes `max_len`, the most bytes it may produce, and
//! fails with [`CompressionError::TooLarge`] as soon as the output would pass
//! it, so a small "zip bomb" cannot make Ferry allocate without bound. Snappy
//! states its decompressed length up front, which is checked before anything
//! is allocated; gzip, lz4 and zstd are read as streams cut at `max_len + 1`
//! bytes. Zstd also declares a window size that the decoder must allocate:
//! it is capped at 2^[`ZSTD_WINDOW_LOG_MAX`] bytes, zstd's own default limit,
//! which every frame Kafka's clients write (levels 1-22) stays within.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use thiserror::Error;

/// The first 8 bytes of a snappy-java (xerial) framed stream.
pub const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Length of the xerial header: the magic, then version and compatible
/// version (both i32 BE, both 1 as written by snappy-java).
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per xerial block, snappy-java's default block size.
const XERIAL_BLOCK_BYTES_MAX: usize = 32 * 1024;
/// The largest zstd window (as a power of two) Ferry agrees to allocate.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// gzip level used when Ferry compresses: Kafka's default (`Deflater` 6).
const GZIP_LEVEL: u32 = 6;
/// zstd level used when Ferry compresses: Kafka's default.
const ZSTD_LEVEL: i32 = 3;

/// A record batch compression codec (attributes bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// No compression (id 0).
    None,
    /// gzip (id 1).
    Gzip,
    /// snappy (id 2); see the module docs for the framing.
    Snappy,
    /// LZ4 frame format (id 3).
    Lz4,
    /// Zstandard (id 4).
    Zstd,
}

/// Why compressing or decompressing failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompressionError {
    /// The attributes name a codec id Kafka does not define (5, 6 or 7).
    #[error("unknown compression codec id {0} in the batch attributes (Kafka defines 0 to 4)")]
    UnknownCodec(u8),
    /// The data would decompress to more than the caller's bound.
    #[error("{codec} data decompresses to more than the limit of {max_len} bytes")]
    TooLarge {
        /// The codec being decompressed.
        codec: Compression,
        /// The bound that was passed.
        max_len: usize,
    },
    /// The compressed data is not valid for its codec.
    #[error("{codec} data is corrupt at or before compressed byte {offset} of {len}: {detail}")]
    Corrupt {
        /// The codec being decompressed.
        codec: Compression,
        /// How far into the compressed input the decoder had read.
        offset: usize,
        /// Length of the compressed input.
        len: usize,
        /// The decoder's own description of the fault.
        detail: String,
    },
    /// The encoder failed (in practice only on inputs beyond a codec's size
    /// limit, such as snappy's 4 GiB).
    #[error("{codec} compression of {len} bytes failed: {detail}")]
    CompressFailed {
        /// The codec compressing.
        codec: Compression,
        /// Length of the input.
        len: usize,
        /// The encoder's description of the fault.
        detail: String,
    },
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The bits of the batch attributes that hold the codec id.
    pub const ATTRIBUTES_MASK: i16 = 0b111;

    /// The codec with Kafka's id `id`.
    pub fn from_id(id: u8) -> Result<Self, CompressionError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(CompressionError::UnknownCodec(other)),
        }
    }

    /// The codec named by bits 0-2 of a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Self, CompressionError> {
        // The mask keeps three bits, so the cast cannot lose anything.
        Self::from_id((attributes & Self::ATTRIBUTES_MASK) as u8)
    }

    /// Kafka's id for this codec, as stored in the attributes.
    pub const fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The name Kafka's `compression.type` setting uses for this codec.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses `data` into a new buffer.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::new();
        self.compress_into(data, &mut out)?;
        Ok(out)
    }

    /// Compresses `data`, appending the result to `out` (a batch builder
    /// appends straight after the header it has already written).
    pub fn compress_into(self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        let failed = |detail: String| CompressionError::CompressFailed {
            codec: self,
            len: data.len(),
            detail,
        };
        match self {
            Compression::None => {
                out.extend_from_slice(data);
                Ok(())
            }
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
                encoder.write_all(data).map_err(|e| failed(e.to_string()))?;
                encoder.finish().map_err(|e| failed(e.to_string()))?;
                Ok(())
            }
            Compression::Snappy => xerial_compress(data, out).map_err(failed),
            Compression::Lz4 => {
                // Independent 64 KiB blocks, no checksums beyond the frame's
                // header checksum: what Kafka's Java producer writes.
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
                encoder.write_all(data).map_err(|e| failed(e.to_string()))?;
                encoder.finish().map_err(|e| failed(e.to_string()))?;
                Ok(())
            }
            Compression::Zstd => {
                let compressed =
                    zstd::bulk::compress(data, ZSTD_LEVEL).map_err(|e| failed(e.to_string()))?;
                out.extend_from_slice(&compressed);
                Ok(())
            }
        }
    }

    /// Decompresses `data`, producing at most `max_len` bytes.
    ///
    /// Output that would be longer fails with [`CompressionError::TooLarge`]
    /// without being produced in full: at most `max_len + 1` bytes are ever
    /// decoded.
    pub fn decompress(self, data: &[u8], max_len: usize) -> Result<Vec<u8>, CompressionError> {
        match self {
            Compression::None => {
                if data.len() > max_len {
                    return Err(CompressionError::TooLarge {
                        codec: self,
                        max_len,
                    });
                }
                Ok(data.to_vec())
            }
            Compression::Gzip => {
                let mut input = CountingReader::new(data);
                let result = {
                    let decoder = flate2::bufread::MultiGzDecoder::new(&mut input);
                    read_bounded(decoder, max_len, data.len())
                };
                self.finish_stream(result, input.consumed(), data.len(), max_len)
            }
            Compression::Snappy => snappy_decompress(data, max_len),
            Compression::Lz4 => {
                let mut input = CountingReader::new(data);
                let result = {
                    let decoder = lz4_flex::frame::FrameDecoder::new(&mut input);
                    read_bounded(decoder, max_len, data.len())
                };
                self.finish_stream(result, input.consumed(), data.len(), max_len)
            }
            Compression::Zstd => {
                let mut input = CountingReader::new(data);
                let result = match zstd::stream::read::Decoder::with_buffer(&mut input) {
                    Ok(mut decoder) => match decoder.window_log_max(ZSTD_WINDOW_LOG_MAX) {
                        Ok(()) => read_bounded(decoder, max_len, data.len()),
                        Err(e) => Err(BoundedReadError::Io(e)),
                    },
                    Err(e) => Err(BoundedReadError::Io(e)),
                };
                self.finish_stream(result, input.consumed(), data.len(), max_len)
            }
        }
    }

    fn finish_stream(
        self,
        result: Result<Vec<u8>, BoundedReadError>,
        consumed: usize,
        len: usize,
        max_len: usize,
    ) -> Result<Vec<u8>, CompressionError> {
        result.map_err(|e| match e {
            BoundedReadError::TooLarge => CompressionError::TooLarge {
                codec: self,
                max_len,
            },
            BoundedReadError::Io(e) => CompressionError::Corrupt {
                codec: self,
                offset: consumed,
                len,
                detail: e.to_string(),
            },
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

enum BoundedReadError {
    TooLarge,
    Io(io::Error),
}

/// Reads `reader` to its end, failing once more than `max_len` bytes come out.
fn read_bounded<R: Read>(
    reader: R,
    max_len: usize,
    size_hint: usize,
) -> Result<Vec<u8>, BoundedReadError> {
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    // Compressed batches usually shrink 2-10x; start there, never past the bound.
    let mut out = Vec::with_capacity(size_hint.saturating_mul(4).min(max_len));
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(BoundedReadError::Io)?;
    if out.len() > max_len {
        return Err(BoundedReadError::TooLarge);
    }
    Ok(out)
}

/// A `BufRead` over a slice that remembers how far the decoder has read,
/// so corruption can be reported with a byte offset.
struct CountingReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> CountingReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        CountingReader { data, pos: 0 }
    }

    fn consumed(&self) -> usize {
        self.pos
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.rest();
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

impl BufRead for CountingReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Ok(self.rest())
    }

    fn consume(&mut self, amt: usize) {
        self.pos = self.pos.saturating_add(amt).min(self.data.len());
    }
}

/// Writes `data` in snappy-java's xerial framing.
fn xerial_compress(data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
    let mut encoder = snap::raw::Encoder::new();
    for block in data.chunks(XERIAL_BLOCK_BYTES_MAX) {
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let block_at = out.len();
        out.resize(block_at + snap::raw::max_compress_len(block.len()), 0);
        let written = encoder
            .compress(block, out.get_mut(block_at..).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        out.truncate(block_at + written);
        // A block holds at most 32 KiB of input, so its compressed length
        // always fits a u32.
        let written = u32::try_from(written).map_err(|e| e.to_string())?;
        if let Some(slot) = out.get_mut(length_at..block_at) {
            slot.copy_from_slice(&written.to_be_bytes());
        }
    }
    Ok(())
}

/// Decompresses snappy in either framing (see the module docs).
fn snappy_decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>, CompressionError> {
    let corrupt = |offset: usize, detail: String| CompressionError::Corrupt {
        codec: Compression::Snappy,
        offset,
        len: data.len(),
        detail,
    };
    let too_large = CompressionError::TooLarge {
        codec: Compression::Snappy,
        max_len,
    };
    let mut decoder = snap::raw::Decoder::new();

    if !data.starts_with(&XERIAL_MAGIC) {
        // One raw block. Its header states the output length: check it
        // before allocating.
        let n = snap::raw::decompress_len(data).map_err(|e| corrupt(0, e.to_string()))?;
        if n > max_len {
            return Err(too_large);
        }
        let mut out = vec![0; n];
        let written = decoder
            .decompress(data, &mut out)
            .map_err(|e| corrupt(0, e.to_string()))?;
        out.truncate(written);
        return Ok(out);
    }

    if data.len() < XERIAL_HEADER_LEN {
        return Err(corrupt(
            data.len(),
            format!(
                "xerial header is {} bytes, {} present",
                XERIAL_HEADER_LEN,
                data.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let mut pos = XERIAL_HEADER_LEN;
    while pos < data.len() {
        let Some(length_bytes) = data.get(pos..pos + 4) else {
            return Err(corrupt(pos, "xerial block length is truncated".into()));
        };
        let mut length = [0u8; 4];
        length.copy_from_slice(length_bytes);
        let block_len = u32::from_be_bytes(length) as usize;
        let block_at = pos + 4;
        let Some(block) = block_at
            .checked_add(block_len)
            .and_then(|end| data.get(block_at..end))
        else {
            return Err(corrupt(
                pos,
                format!(
                    "xerial block of {} bytes runs past the end ({} bytes left)",
                    block_len,
                    data.len() - block_at
                ),
            ));
        };
        if !block.is_empty() {
            let n =
                snap::raw::decompress_len(block).map_err(|e| corrupt(block_at, e.to_string()))?;
            if n > max_len - out.len() {
                return Err(too_large);
            }
            let start = out.len();
            out.resize(start + n, 0);
            let written = decoder
                .decompress(block, out.get_mut(start..).unwrap_or_default())
                .map_err(|e| corrupt(block_at, e.to_string()))?;
            out.truncate(start + written);
        }
        pos = block_at + block_len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a repeating text with a counter.
        let mut v = Vec::with_capacity(len);
        let mut i = 0u32;
        while v.len() < len {
            v.extend_from_slice(format!("record-{i:08} payload;").as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    #[test]
    fn ids_and_attributes() {
        for (id, codec) in Compression::ALL.iter().enumerate() {
            assert_eq!(codec.id() as usize, id);
            assert_eq!(Compression::from_id(id as u8), Ok(*codec));
            // Other attribute bits must not leak into the codec.
            let attributes = 0b0111_1000 | id as i16;
            assert_eq!(Compression::from_attributes(attributes), Ok(*codec));
        }
        for id in 5..=7u8 {
            assert_eq!(
                Compression::from_attributes(id as i16),
                Err(CompressionError::UnknownCodec(id))
            );
        }
        assert_eq!(Compression::Lz4.to_string(), "lz4");
    }

    #[test]
    fn round_trip_every_codec_and_size() {
        for codec in Compression::ALL {
            for len in [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 200_000] {
                let data = sample(len);
                let compressed = codec.compress(&data).unwrap();
                if len >= 100_000 && codec != Compression::None {
                    assert!(
                        compressed.len() < data.len() / 2,
                        "{codec} did not compress"
                    );
                }
                let back = codec.decompress(&compressed, len).unwrap();
                assert_eq!(back, data, "{codec} len {len}");
            }
        }
    }

    #[test]
    fn output_formats_are_what_kafka_expects() {
        let data = sample(1000);
        let gzip = Compression::Gzip.compress(&data).unwrap();
        assert_eq!(&gzip[..2], &[0x1f, 0x8b]);
        let lz4 = Compression::Lz4.compress(&data).unwrap();
        assert_eq!(&lz4[..4], &[0x04, 0x22, 0x4d, 0x18]);
        let zstd = Compression::Zstd.compress(&data).unwrap();
        assert_eq!(&zstd[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        let snappy = Compression::Snappy.compress(&data).unwrap();
        assert_eq!(&snappy[..8], &XERIAL_MAGIC);
        assert_eq!(&snappy[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        let block_len = u32::from_be_bytes(snappy[16..20].try_into().unwrap()) as usize;
        assert_eq!(snappy.len(), 20 + block_len, "1000 bytes make one block");
        // The block is plain raw snappy.
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&snappy[20..])
            .unwrap();
        assert_eq!(raw, data);
    }

    #[test]
    fn xerial_blocks_split_at_32_kib() {
        let data = sample(70_000);
        let snappy = Compression::Snappy.compress(&data).unwrap();
        let mut pos = 16;
        let mut blocks = 0;
        let mut total = 0;
        while pos < snappy.len() {
            let n = u32::from_be_bytes(snappy[pos..pos + 4].try_into().unwrap()) as usize;
            let block = &snappy[pos + 4..pos + 4 + n];
            total += snap::raw::decompress_len(block).unwrap();
            pos += 4 + n;
            blocks += 1;
        }
        assert_eq!(blocks, 3);
        assert_eq!(total, 70_000);
    }

    #[test]
    fn raw_snappy_is_accepted() {
        // librdkafka may send one raw block with no xerial framing.
        let data = sample(5000);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert!(!raw.starts_with(&XERIAL_MAGIC));
        assert_eq!(Compression::Snappy.decompress(&raw, 5000).unwrap(), data);
        assert!(matches!(
            Compression::Snappy.decompress(&raw, 4999),
            Err(CompressionError::TooLarge { .. })
        ));
    }

    #[test]
    fn xerial_with_empty_blocks_and_no_blocks() {
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(Compression::Snappy.decompress(&framed, 10).unwrap(), b"");
        framed.extend_from_slice(&[0, 0, 0, 0]);
        let block = snap::raw::Encoder::new().compress_vec(b"hello").unwrap();
        framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
        framed.extend_from_slice(&block);
        assert_eq!(
            Compression::Snappy.decompress(&framed, 10).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn xerial_faults_name_the_offset() {
        let data = sample(100);
        let good = Compression::Snappy.compress(&data).unwrap();
        // Header cut short.
        let err = Compression::Snappy
            .decompress(&good[..12], 1000)
            .unwrap_err();
        assert!(
            matches!(err, CompressionError::Corrupt { offset: 12, .. }),
            "{err}"
        );
        // Block length cut short.
        let err = Compression::Snappy
            .decompress(&good[..18], 1000)
            .unwrap_err();
        assert!(
            matches!(err, CompressionError::Corrupt { offset: 16, .. }),
            "{err}"
        );
        // Block cut short.
        let err = Compression::Snappy
            .decompress(&good[..good.len() - 1], 1000)
            .unwrap_err();
        assert!(
            matches!(err, CompressionError::Corrupt { offset: 16, .. }),
            "{err}"
        );
        // A block length of 4 GiB - 1 must not overflow or allocate.
        let mut huge = good[..16].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Compression::Snappy.decompress(&huge, 1000),
            Err(CompressionError::Corrupt { offset: 16, .. })
        ));
    }

    #[test]
    fn snappy_declared_length_is_checked_before_allocating() {
        // A raw block claiming 2^32 - 1 output bytes, with no data behind it.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let err = Compression::Snappy.decompress(&bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, CompressionError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn bombs_stop_at_the_bound() {
        let zeros = vec![0u8; 4 << 20];
        for codec in Compression::ALL {
            let compressed = codec.compress(&zeros).unwrap();
            if codec != Compression::None {
                assert!(
                    compressed.len() < zeros.len() / 16,
                    "{codec}: {}",
                    compressed.len()
                );
            }
            assert_eq!(
                codec.decompress(&compressed, 4096).unwrap_err(),
                CompressionError::TooLarge {
                    codec,
                    max_len: 4096
                }
            );
            assert_eq!(
                codec.decompress(&compressed, zeros.len() - 1).unwrap_err(),
                CompressionError::TooLarge {
                    codec,
                    max_len: zeros.len() - 1
                }
            );
            assert_eq!(
                codec.decompress(&compressed, zeros.len()).unwrap().len(),
                zeros.len()
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..512u32).map(|i| (i * 7919 % 251) as u8).collect();
        for codec in Compression::ALL {
            if codec == Compression::None {
                continue;
            }
            let err = codec.decompress(&garbage, 1 << 16).unwrap_err();
            assert!(
                matches!(err, CompressionError::Corrupt { .. }),
                "{codec}: {err}"
            );
            // Every prefix of a valid stream fails or, for a prefix that is a
            // complete stream, succeeds; it never panics.
            let good = codec.compress(&sample(3000)).unwrap();
            for cut in 0..good.len() {
                let _ = codec.decompress(&good[..cut], 1 << 16);
            }
            assert!(codec.decompress(&good[..good.len() / 2], 1 << 16).is_err());
        }
    }

    #[test]
    fn corrupt_streams_report_how_far_they_read() {
        let good = Compression::Gzip.compress(&sample(3000)).unwrap();
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 5] ^= 0xff; // inside the CRC32/ISIZE trailer
        match Compression::Gzip.decompress(&bad, 1 << 16).unwrap_err() {
            CompressionError::Corrupt { offset, len, .. } => {
                assert_eq!(len, n);
                assert!(offset <= n && offset > 0, "offset {offset}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let err = Compression::Snappy
            .decompress(&XERIAL_MAGIC, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("snappy"), "{err}");
        assert!(err.contains("byte 8"), "{err}");
        let err = CompressionError::UnknownCodec(6).to_string();
        assert!(err.contains('6'), "{err}");
    }
}
