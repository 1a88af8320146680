//! AMQP 0-9-1 frames and the field types the publisher writes and reads (the protocol's
//! specification, section 4.2): frames `type channel size payload 0xCE`, methods as
//! `class method arguments`, short strings, long strings and field tables.

/// Frame types.
pub const METHOD: u8 = 1;
pub const HEADER: u8 = 2;
pub const BODY: u8 = 3;
pub const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// The bytes a client opens a connection with.
pub const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// A value of a field table, as far as the publisher writes them.
pub enum Field<'a> {
    Str(&'a str),
    Bool(bool),
    Table(Vec<(&'a str, Field<'a>)>),
}

/// A method frame's arguments, written in order.
#[derive(Default)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A short string: at most 255 bytes (longer text is cut at a character boundary).
    pub fn short(mut self, s: &str) -> Self {
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push(end as u8);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
        self
    }

    pub fn long(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    pub fn table(mut self, fields: &[(&str, Field<'_>)]) -> Self {
        let mut body = Vec::new();
        write_table_entries(&mut body, fields);
        self.0.extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.0.extend_from_slice(&body);
        self
    }
}

fn write_table_entries(out: &mut Vec<u8>, fields: &[(&str, Field<'_>)]) {
    for (name, value) in fields {
        let name = &name.as_bytes()[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        match value {
            Field::Str(s) => {
                out.push(b'S');
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Field::Bool(b) => {
                out.push(b't');
                out.push(*b as u8);
            }
            Field::Table(t) => {
                out.push(b'F');
                let mut inner = Vec::new();
                write_table_entries(&mut inner, t);
                out.extend_from_slice(&(inner.len() as u32).to_be_bytes());
                out.extend_from_slice(&inner);
            }
        }
    }
}

/// Append a frame to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

/// Append a method frame.
pub fn method(out: &mut Vec<u8>, channel: u16, class: u16, id: u16, args: Args) {
    let mut payload = Vec::with_capacity(4 + args.0.len());
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(&args.0);
    frame(out, METHOD, channel, &payload);
}

/// Reads a method's arguments.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or("a method frame cut short")?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub fn short(&mut self) -> Result<String, String> {
        let n = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_frames_carry_class_method_and_arguments() {
        let mut out = Vec::new();
        method(
            &mut out,
            1,
            60,
            40,
            Args::default().u16(0).short("ex").short("rk").u8(1),
        );
        assert_eq!(
            out,
            [
                &[1u8, 0, 1, 0, 0, 0, 13][..],
                &[0, 60, 0, 40, 0, 0, 2, b'e', b'x', 2, b'r', b'k', 1, 0xCE]
            ]
            .concat()
        );
        let mut r = Reader::new(&out[7..out.len() - 1]);
        assert_eq!((r.u16().unwrap(), r.u16().unwrap()), (60, 40));
        assert_eq!(r.u16().unwrap(), 0);
        assert_eq!(r.short().unwrap(), "ex");
        assert_eq!(r.short().unwrap(), "rk");
        assert_eq!(r.u8().unwrap(), 1);
        assert!(r.u8().is_err());
    }

    #[test]
    fn tables_nest() {
        let a = Args::default().table(&[
            ("a", Field::Str("x")),
            ("c", Field::Table(vec![("b", Field::Bool(true))])),
        ]);
        assert_eq!(
            a.0,
            [
                &[0u8, 0, 0, 19][..],
                &[1, b'a', b'S', 0, 0, 0, 1, b'x'],
                &[1, b'c', b'F', 0, 0, 0, 4, 1, b'b', b't', 1],
            ]
            .concat()
        );
    }
}
