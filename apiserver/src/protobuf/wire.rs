//! The protobuf wire format: varints and tagged fields, read without trusting any length.

use super::ProtobufError;

/// One field as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl Value<'_> {
    pub(crate) fn wire_name(&self) -> &'static str {
        match self {
            Value::Varint(_) => "varint",
            Value::Fixed64(_) => "fixed64",
            Value::Fixed32(_) => "fixed32",
            Value::Bytes(_) => "length-delimited",
        }
    }
}

/// Reads the fields of one message in order.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The message being read, for errors.
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], message: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            message,
        }
    }

    fn truncated(&self) -> ProtobufError {
        ProtobufError::Truncated {
            message: self.message,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or_else(|| self.truncated())?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtobufError::BadVarint {
            message: self.message,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.truncated())?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, ProtobufError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err(ProtobufError::BadTag {
                message: self.message,
            });
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.truncated())?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            // Groups (3, 4) are proto2 relics Kubernetes never uses.
            other => {
                return Err(ProtobufError::WireType {
                    message: self.message,
                    field: number,
                    wire: format!("wire type {other}"),
                });
            }
        };
        Ok(Some((number, value)))
    }

    /// Reads varints until the end (a packed repeated field's payload).
    pub(crate) fn packed_varints(mut self) -> Result<Vec<u64>, ProtobufError> {
        let mut out = Vec::new();
        while self.pos < self.buf.len() {
            out.push(self.varint()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type() {
        let buf = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 0, 0, 0, 0, 0, 0, 0, // 2: fixed64 1
            0x1a, 0x02, b'h', b'i', // 3: bytes "hi"
            0x25, 2, 0, 0, 0, // 4: fixed32 2
        ];
        let mut r = Reader::new(&buf, "T");
        assert_eq!(r.next_field().unwrap(), Some((1, Value::Varint(150))));
        assert_eq!(r.next_field().unwrap(), Some((2, Value::Fixed64(1))));
        assert_eq!(r.next_field().unwrap(), Some((3, Value::Bytes(b"hi"))));
        assert_eq!(r.next_field().unwrap(), Some((4, Value::Fixed32(2))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        for buf in [
            &[0x0a, 0x05, b'a'][..],
            &[0x08][..],
            &[0x08, 0x80][..],
            &[0x11, 1, 2][..],
            &[0x0b][..],
            &[0x00, 0x01][..],
            &[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
        ] {
            let mut r = Reader::new(buf, "T");
            let mut result = Ok(None);
            for _ in 0..4 {
                result = r.next_field();
                if !matches!(result, Ok(Some(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{buf:?} gave {result:?}");
        }
    }
}
