//! Wire primitives for the hand-written codecs: a bounds-checked [`Reader`], a [`Writer`]
//! that either appends bytes or only counts them, and the [`WireMessage`] trait that gives
//! every message the same `encode` / `compute_size` / `decode` surface.
//!
//! Only flexible-version encodings are here (compact strings and arrays, unsigned varints,
//! tagged-field sections), because APIs 88 and 89 are flexible from v0. `kafka-protocol`'s
//! own `types` encoders are crate-private and allocate whatever an array length claims, so
//! these are written by hand: decoding never panics and never allocates more than the input
//! could hold. This module knows no message schema.

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, DecodeErrorKind};

/// Longest string the Java codec accepts (its length must fit an int16).
const MAX_STRING_LEN: usize = 0x7fff;

/// Appends a message's bytes to a buffer, or only counts them.
///
/// Each message has one `write_body` function; `encode` runs it against a buffer and
/// `compute_size` runs it in counting mode, so the two cannot disagree.
#[derive(Debug)]
pub struct Writer<'a> {
    out: Option<&'a mut BytesMut>,
    len: usize,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut BytesMut) -> Self {
        Writer {
            out: Some(out),
            len: 0,
        }
    }

    /// A writer that only counts.
    pub fn counting() -> Writer<'static> {
        Writer { out: None, len: 0 }
    }

    /// Bytes written (or counted) so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn put(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if let Some(out) = self.out.as_deref_mut() {
            out.put_slice(bytes);
        }
    }

    /// int8.
    pub fn i8(&mut self, v: i8) {
        self.put(&v.to_be_bytes());
    }

    /// int16, big-endian.
    pub fn i16(&mut self, v: i16) {
        self.put(&v.to_be_bytes());
    }

    /// uint16, big-endian.
    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    /// int32, big-endian.
    pub fn i32(&mut self, v: i32) {
        self.put(&v.to_be_bytes());
    }

    /// int64, big-endian.
    pub fn i64(&mut self, v: i64) {
        self.put(&v.to_be_bytes());
    }

    /// bool as one byte, 1 or 0.
    pub fn bool(&mut self, v: bool) {
        self.put(&[u8::from(v)]);
    }

    /// Unsigned varint (7 bits per byte, little-endian groups).
    pub fn uvarint(&mut self, mut v: u32) {
        let mut tmp = [0u8; 5];
        let mut n = 0;
        while v >= 0x80 {
            tmp[n] = (v as u8 & 0x7f) | 0x80;
            v >>= 7;
            n += 1;
        }
        tmp[n] = v as u8;
        self.put(&tmp[..=n]);
    }

    /// Compact length prefix: `len + 1`, or 0 for null. Lengths beyond `u32::MAX - 1` are
    /// clamped; no Kafka message comes near that.
    fn compact_len(&mut self, len: Option<usize>) {
        match len {
            None => self.uvarint(0),
            Some(n) => self.uvarint(u32::try_from(n).unwrap_or(u32::MAX - 1).saturating_add(1)),
        }
    }

    /// Non-nullable compact string.
    pub fn string(&mut self, s: &str) {
        self.compact_len(Some(s.len()));
        self.put(s.as_bytes());
    }

    /// Nullable compact string.
    pub fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            None => self.compact_len(None),
            Some(s) => self.string(s),
        }
    }

    /// Non-nullable compact array, each element written by `item`.
    pub fn array<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.compact_len(Some(items.len()));
        for i in items {
            item(self, i);
        }
    }

    /// Nullable compact array.
    pub fn nullable_array<T>(&mut self, items: Option<&[T]>, item: impl FnMut(&mut Self, &T)) {
        match items {
            None => self.compact_len(None),
            Some(items) => self.array(items, item),
        }
    }

    /// Presence byte of a nullable struct: -1 for null, 1 for present.
    pub fn struct_presence(&mut self, present: bool) {
        self.i8(if present { 1 } else { -1 });
    }

    /// An empty tagged-field section (these messages define no tagged fields).
    pub fn empty_tagged_fields(&mut self) {
        self.uvarint(0);
    }
}

/// Reads a message body from a byte slice, every read bounds-checked.
///
/// Errors carry the message name and version given at construction and the field name given
/// per read.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    api: &'static str,
    version: i16,
}

impl<'a> Reader<'a> {
    /// A reader over `buf` for message `api` at `version`.
    pub fn new(buf: &'a [u8], api: &'static str, version: i16) -> Self {
        Reader { buf, api, version }
    }

    /// The version being decoded.
    pub fn version(&self) -> i16 {
        self.version
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// A [`DecodeError`] for `field` in this reader's context.
    pub fn error(&self, field: &'static str, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            api: self.api,
            version: self.version,
            field,
            kind,
        }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.error(
                field,
                DecodeErrorKind::Truncated {
                    needed: n,
                    remaining: self.buf.len(),
                },
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array_of<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    /// int8.
    pub fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array_of(field)?))
    }

    /// int16.
    pub fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array_of(field)?))
    }

    /// uint16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array_of(field)?))
    }

    /// int32.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array_of(field)?))
    }

    /// int64.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array_of(field)?))
    }

    /// bool: any non-zero byte is true, as in the Java codec.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.i8(field)? != 0)
    }

    /// Unsigned varint of at most five bytes.
    pub fn uvarint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let [b] = self.array_of::<1>(field)?;
            if i == 4 && b & 0xf0 != 0 {
                return Err(self.error(field, DecodeErrorKind::VarIntTooLong));
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error(field, DecodeErrorKind::VarIntTooLong))
    }

    /// Compact length prefix: `None` for null, otherwise the length, which must not exceed
    /// the remaining input (every element takes at least one byte).
    fn compact_len(&mut self, field: &'static str) -> Result<Option<usize>, DecodeError> {
        match self.uvarint(field)? {
            0 => Ok(None),
            n => {
                let len = (n - 1) as usize;
                if len > self.buf.len() {
                    return Err(self.error(
                        field,
                        DecodeErrorKind::Truncated {
                            needed: len,
                            remaining: self.buf.len(),
                        },
                    ));
                }
                Ok(Some(len))
            }
        }
    }

    /// Nullable compact string.
    pub fn nullable_string(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        let Some(len) = self.compact_len(field)? else {
            return Ok(None);
        };
        if len > MAX_STRING_LEN {
            return Err(self.error(field, DecodeErrorKind::InvalidLength { length: len as i64 }));
        }
        let bytes = self.take(field, len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(self.error(field, DecodeErrorKind::InvalidUtf8)),
        }
    }

    /// Non-nullable compact string.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.nullable_string(field)?
            .ok_or_else(|| self.error(field, DecodeErrorKind::UnexpectedNull))
    }

    /// Nullable compact array, each element read by `item`.
    pub fn nullable_array<T>(
        &mut self,
        field: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let Some(len) = self.compact_len(field)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(item(self)?);
        }
        Ok(Some(out))
    }

    /// Non-nullable compact array.
    pub fn array<T>(
        &mut self,
        field: &'static str,
        item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        self.nullable_array(field, item)?
            .ok_or_else(|| self.error(field, DecodeErrorKind::UnexpectedNull))
    }

    /// Presence byte of a nullable struct: negative means null.
    pub fn struct_presence(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.i8(field)? >= 0)
    }

    /// Reads a tagged-field section and skips every field in it (none are known here).
    pub fn skip_tagged_fields(&mut self, field: &'static str) -> Result<(), DecodeError> {
        let count = self.uvarint(field)?;
        for _ in 0..count {
            let _tag = self.uvarint(field)?;
            let size = self.uvarint(field)? as usize;
            self.take(field, size)?;
        }
        Ok(())
    }

    /// Fails with [`DecodeErrorKind::TrailingBytes`] unless the input is used up.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.error(
                "<end of message>",
                DecodeErrorKind::TrailingBytes {
                    count: self.buf.len(),
                },
            ))
        }
    }
}

/// A message of one of the hand-written APIs: the body without size prefix or header.
pub trait WireMessage: Sized {
    /// The Kafka API key.
    const API_KEY: i16;
    /// The schema name, used in errors.
    const NAME: &'static str;
    /// Lowest version this codec implements.
    const MIN_VERSION: i16;
    /// Highest version this codec implements.
    const MAX_VERSION: i16;

    /// Writes the body for `version`. Fields the version does not have are not written;
    /// versions above `MAX_VERSION` are written as `MAX_VERSION`.
    fn write_body(&self, w: &mut Writer<'_>, version: i16);

    /// Reads the body for `version`; the version has been checked against the range.
    fn read_body(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Appends the body to `buf`. Encoding cannot fail.
    fn encode(&self, buf: &mut BytesMut, version: i16) {
        self.write_body(&mut Writer::new(buf), version);
    }

    /// The number of bytes [`WireMessage::encode`] appends.
    fn compute_size(&self, version: i16) -> usize {
        let mut w = Writer::counting();
        self.write_body(&mut w, version);
        w.len()
    }

    /// Decodes exactly `buf` as a body of `version`: short input, trailing bytes and
    /// unsupported versions are errors.
    fn decode(buf: &[u8], version: i16) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, Self::NAME, version);
        if !(Self::MIN_VERSION..=Self::MAX_VERSION).contains(&version) {
            return Err(r.error(
                "<version>",
                DecodeErrorKind::UnsupportedVersion {
                    min: Self::MIN_VERSION,
                    max: Self::MAX_VERSION,
                },
            ));
        }
        let msg = Self::read_body(&mut r)?;
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_uvarint(v: u32) -> (usize, u32) {
        let mut buf = BytesMut::new();
        Writer::new(&mut buf).uvarint(v);
        let mut r = Reader::new(&buf, "T", 0);
        let back = r.uvarint("v").expect("decodes");
        r.finish().expect("no trailing bytes");
        (buf.len(), back)
    }

    #[test]
    fn uvarint_boundaries() {
        assert_eq!(roundtrip_uvarint(0), (1, 0));
        assert_eq!(roundtrip_uvarint(127), (1, 127));
        assert_eq!(roundtrip_uvarint(128), (2, 128));
        assert_eq!(roundtrip_uvarint(300), (2, 300));
        assert_eq!(roundtrip_uvarint(u32::MAX), (5, u32::MAX));
    }

    #[test]
    fn uvarint_longer_than_five_bytes_is_rejected() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 0x7f];
        let err = Reader::new(&bytes, "T", 0).uvarint("Len").unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::VarIntTooLong);
        assert_eq!(err.field, "Len");
    }

    #[test]
    fn array_length_beyond_input_is_rejected_before_allocating() {
        let bytes = [0xfe, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = Reader::new(&bytes, "T", 1)
            .array("Items", |r| r.i32("Item"))
            .unwrap_err();
        assert_eq!(err.field, "Items");
        assert!(matches!(err.kind, DecodeErrorKind::Truncated { .. }));
    }

    #[test]
    fn null_in_non_nullable_string_is_rejected() {
        let err = Reader::new(&[0], "T", 0).string("Name").unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnexpectedNull);
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let err = Reader::new(&[3, 0xc3, 0x28], "T", 0)
            .string("Name")
            .unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::InvalidUtf8);
    }

    #[test]
    fn counting_writer_matches_real_writer() {
        let mut buf = BytesMut::new();
        let mut real = Writer::new(&mut buf);
        let mut count = Writer::counting();
        for w in [&mut real, &mut count] {
            w.string("héllo");
            w.nullable_string(None);
            w.array(&[1i32, 2, 3], |w, v| w.i32(*v));
            w.uvarint(70_000);
            w.empty_tagged_fields();
        }
        let written = real.len();
        assert_eq!(written, count.len());
        assert_eq!(buf.len(), written);
    }
}
