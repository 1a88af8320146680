//! The Confluent wire format: magic byte 0, the schema id as 4 bytes big-endian, then the Avro
//! binary datum. Standard Kafka tooling (Confluent deserializers, kcat -s avro, ...) reads it.

use crate::{Error, Result};

/// First byte of every framed record.
pub const MAGIC: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Start a framed record for schema `id`.
pub fn write_header(buf: &mut Vec<u8>, id: u32) {
    buf.push(MAGIC);
    buf.extend_from_slice(&id.to_be_bytes());
}

/// Split a framed record into its schema id and Avro payload.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8])> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::BadInput(format!(
            "record of {} bytes is too short for the Confluent wire format (5-byte header)",
            bytes.len()
        )));
    }
    if bytes[0] != MAGIC {
        return Err(Error::BadInput(format!(
            "record starts with byte {:#04x}, not the Confluent magic byte 0x00",
            bytes[0]
        )));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_splits() {
        let mut buf = Vec::new();
        write_header(&mut buf, 0x0102_0304);
        buf.extend_from_slice(b"avro");
        assert_eq!(buf[..5], [0, 1, 2, 3, 4]);
        assert_eq!(split(&buf).unwrap(), (0x0102_0304, &b"avro"[..]));
        assert!(
            split(&[0, 1])
                .unwrap_err()
                .to_string()
                .contains("too short")
        );
        assert!(
            split(&[9, 0, 0, 0, 1])
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }
}
