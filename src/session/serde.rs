//! Serdes between typed keys/aggregates and the bytes the store keeps. Owns the `Serde`
//! trait and the built-ins matching Kafka's `StringSerde` (UTF-8) and `LongSerde` (i64
//! big-endian). Must not touch stores; decoding never panics on short or bad input.

use bytes::{BufMut, Bytes, BytesMut};

use crate::session::error::SerdeError;

/// Converts `T` to bytes and back. Serializing cannot fail; deserializing reports why not.
pub trait Serde<T> {
    /// Appends the encoding of `value` to `out`.
    fn serialize_into(&self, value: &T, out: &mut BytesMut);
    /// Decodes a value.
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError>;

    /// The encoding of `value`.
    fn serialize(&self, value: &T) -> Bytes {
        let mut out = BytesMut::new();
        self.serialize_into(value, &mut out);
        out.freeze()
    }
}

/// UTF-8 strings, as Kafka's `StringSerde` (default encoding).
#[derive(Debug, Default, Clone, Copy)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn serialize_into(&self, value: &String, out: &mut BytesMut) {
        out.put_slice(value.as_bytes());
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<String, SerdeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| SerdeError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            })
    }
}

/// 64-bit signed integers, 8 bytes big-endian, as Kafka's `LongSerde`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LongSerde;

impl Serde<i64> for LongSerde {
    fn serialize_into(&self, value: &i64, out: &mut BytesMut) {
        out.put_i64(*value);
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<i64, SerdeError> {
        let array: [u8; 8] = bytes.try_into().map_err(|_| SerdeError::WrongLength {
            expected: 8,
            actual: bytes.len(),
        })?;
        Ok(i64::from_be_bytes(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn long_is_big_endian_eight_bytes() {
        assert_eq!(&LongSerde.serialize(&0x0102)[..], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(LongSerde.deserialize(&[0xFF; 8]), Ok(-1));
    }

    #[test]
    fn bad_input_is_an_error() {
        for len in [0usize, 7, 9] {
            assert_eq!(
                LongSerde.deserialize(&vec![0; len]),
                Err(SerdeError::WrongLength {
                    expected: 8,
                    actual: len
                })
            );
        }
        assert_eq!(
            StringSerde.deserialize(b"ok\xff"),
            Err(SerdeError::InvalidUtf8 { valid_up_to: 2 })
        );
    }

    proptest! {
        #[test]
        fn round_trips(s in ".*", n in any::<i64>()) {
            prop_assert_eq!(StringSerde.deserialize(&StringSerde.serialize(&s)), Ok(s.clone()));
            prop_assert_eq!(LongSerde.deserialize(&LongSerde.serialize(&n)), Ok(n));
        }
    }
}
