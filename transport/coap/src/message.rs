//! CoAP messages (RFC 7252 §3), as far as telemark needs them: a header,
//! a token, options, a payload. Writing needs no allocation; parsing
//! borrows the datagram and checks every length before it reads.

use core::fmt;

/// The message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Type {
    /// Confirmable.
    Con,
    /// Non-confirmable: what telemark sends, its own acknowledgement
    /// being end to end.
    Non,
    /// Acknowledgement.
    Ack,
    /// Reset.
    Reset,
}

impl Type {
    fn bits(self) -> u8 {
        match self {
            Type::Con => 0,
            Type::Non => 1,
            Type::Ack => 2,
            Type::Reset => 3,
        }
    }

    fn from_bits(bits: u8) -> Type {
        match bits & 3 {
            0 => Type::Con,
            1 => Type::Non,
            2 => Type::Ack,
            _ => Type::Reset,
        }
    }
}

/// A method or response code: class and detail, `c.dd`.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Code(pub u8);

impl Code {
    /// 0.00: an empty message.
    pub const EMPTY: Code = Code::new(0, 0);
    /// 0.02.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03.
    pub const PUT: Code = Code::new(0, 3);
    /// 2.01.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.04: what the server answers a frame it committed with.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 4.00.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.03.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.13.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.29 (RFC 8516): the client sends too often; Max-Age says how long
    /// to wait.
    pub const TOO_MANY_REQUESTS: Code = Code::new(4, 29);
    /// 5.03: Max-Age says when to try again.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);

    /// The code `class.detail`.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1f))
    }

    /// The class: 0 request, 2 success, 4 client error, 5 server error.
    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail.
    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Option numbers used here.
pub mod option {
    /// Uri-Path: one segment of the path per option.
    pub const URI_PATH: u16 = 11;
    /// Content-Format.
    pub const CONTENT_FORMAT: u16 = 12;
    /// Max-Age: with 4.29 or 5.03, seconds before trying again.
    pub const MAX_AGE: u16 = 14;
}

/// Why bytes are no CoAP message, or why a message does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MessageError {
    /// Shorter than its header, token or an option says.
    Truncated,
    /// Not version 1.
    Version,
    /// A token longer than 8 bytes.
    TokenLength,
    /// An option delta or length of 15 outside the payload marker, or a
    /// payload marker with no payload.
    Format,
    /// The buffer cannot hold the message.
    TooLarge,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageError::Truncated => "CoAP message cut short",
            MessageError::Version => "not CoAP version 1",
            MessageError::TokenLength => "CoAP token longer than 8 bytes",
            MessageError::Format => "malformed CoAP options or payload marker",
            MessageError::TooLarge => "CoAP message larger than the buffer",
        })
    }
}

impl core::error::Error for MessageError {}

/// A parsed message, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The type.
    pub ty: Type,
    /// The method or response code.
    pub code: Code,
    /// The message id.
    pub message_id: u16,
    /// The token, 0 to 8 bytes.
    pub token: &'a [u8],
    options: &'a [u8],
    /// The payload, empty if there is none.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses `bytes`.
    ///
    /// ```
    /// use telemark_coap::message::{Code, Message, Type};
    /// // NON 2.04, id 0x1234, token [7, 9], Max-Age 30, payload "ok".
    /// let bytes = [0x52, 0x44, 0x12, 0x34, 7, 9, 0xd1, 0x01, 30, 0xff, b'o', b'k'];
    /// let m = Message::parse(&bytes).unwrap();
    /// assert_eq!((m.ty, m.code, m.message_id), (Type::Non, Code::CHANGED, 0x1234));
    /// assert_eq!((m.token, m.payload), (&[7, 9][..], &b"ok"[..]));
    /// assert_eq!(m.max_age(), Some(30));
    /// assert!(Message::parse(&bytes[..5]).is_err());
    /// ```
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, MessageError> {
        let (&[first, code, id_hi, id_lo], rest) = bytes
            .split_first_chunk::<4>()
            .ok_or(MessageError::Truncated)?;
        if first >> 6 != 1 {
            return Err(MessageError::Version);
        }
        let token_len = usize::from(first & 0x0f);
        if token_len > 8 {
            return Err(MessageError::TokenLength);
        }
        let token = rest.get(..token_len).ok_or(MessageError::Truncated)?;
        let rest = rest.get(token_len..).ok_or(MessageError::Truncated)?;
        // Walk the options to find where the payload starts.
        let mut options = Options {
            bytes: rest,
            number: 0,
        };
        while options.next_option()?.is_some() {}
        let consumed = rest.len() - options.bytes.len();
        let options_bytes = rest.get(..consumed).ok_or(MessageError::Truncated)?;
        let payload = match options.bytes.split_first() {
            None => &[][..],
            Some((0xff, [])) => return Err(MessageError::Format),
            Some((0xff, payload)) => payload,
            Some(_) => return Err(MessageError::Format),
        };
        Ok(Message {
            ty: Type::from_bits(first >> 4),
            code: Code(code),
            message_id: u16::from_be_bytes([id_hi, id_lo]),
            token,
            options: options_bytes,
            payload,
        })
    }

    /// The options, in order: (number, value).
    pub fn options(&self) -> impl Iterator<Item = (u16, &'a [u8])> {
        let mut options = Options {
            bytes: self.options,
            number: 0,
        };
        core::iter::from_fn(move || options.next_option().ok().flatten())
    }

    /// The Uri-Path segments.
    pub fn path(&self) -> impl Iterator<Item = &'a [u8]> {
        self.options()
            .filter(|(n, _)| *n == option::URI_PATH)
            .map(|(_, v)| v)
    }

    /// Max-Age in seconds, if the message has one.
    pub fn max_age(&self) -> Option<u32> {
        let (_, value) = self.options().find(|(n, _)| *n == option::MAX_AGE)?;
        if value.len() > 4 {
            return None;
        }
        Some(value.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)))
    }
}

struct Options<'a> {
    bytes: &'a [u8],
    number: u16,
}

impl<'a> Options<'a> {
    /// The next option; `None` at the payload marker or the end.
    fn next_option(&mut self) -> Result<Option<(u16, &'a [u8])>, MessageError> {
        let Some((&first, rest)) = self.bytes.split_first() else {
            return Ok(None);
        };
        if first == 0xff {
            return Ok(None);
        }
        let (delta, rest) = extended(first >> 4, rest)?;
        let (len, rest) = extended(first & 0x0f, rest)?;
        let value = rest
            .get(..usize::from(len))
            .ok_or(MessageError::Truncated)?;
        self.bytes = rest
            .get(usize::from(len)..)
            .ok_or(MessageError::Truncated)?;
        self.number = self.number.checked_add(delta).ok_or(MessageError::Format)?;
        Ok(Some((self.number, value)))
    }
}

/// An option delta or length nibble with its extension bytes.
fn extended(nibble: u8, rest: &[u8]) -> Result<(u16, &[u8]), MessageError> {
    match nibble {
        0..=12 => Ok((u16::from(nibble), rest)),
        13 => {
            let (&b, rest) = rest.split_first().ok_or(MessageError::Truncated)?;
            Ok((u16::from(b) + 13, rest))
        }
        14 => {
            let (&[hi, lo], rest) = rest
                .split_first_chunk::<2>()
                .ok_or(MessageError::Truncated)?;
            u16::from_be_bytes([hi, lo])
                .checked_add(269)
                .map(|v| (v, rest))
                .ok_or(MessageError::Format)
        }
        _ => Err(MessageError::Format),
    }
}

/// Writes a message into a buffer: the header and token first, then
/// options in increasing number, then the payload.
///
/// ```
/// use telemark_coap::message::{option, Code, Message, Type, Writer};
/// let mut buf = [0u8; 64];
/// let mut w = Writer::new(&mut buf, Type::Non, Code::POST, 0x0101, &[0xab, 0xcd]).unwrap();
/// w.option(option::URI_PATH, b"up").unwrap();
/// let n = w.payload(b"frame").unwrap();
/// // 4 header + 2 token + 3 option + 1 marker + 5 payload.
/// assert_eq!(n, 15);
/// let m = Message::parse(&buf[..n]).unwrap();
/// assert_eq!(m.path().collect::<Vec<_>>(), [b"up"]);
/// assert_eq!(m.payload, b"frame");
/// ```
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    number: u16,
}

impl<'b> Writer<'b> {
    /// Starts a message; `token` is at most 8 bytes.
    pub fn new(
        buf: &'b mut [u8],
        ty: Type,
        code: Code,
        message_id: u16,
        token: &[u8],
    ) -> Result<Writer<'b>, MessageError> {
        let tkl = u8::try_from(token.len())
            .ok()
            .filter(|&n| n <= 8)
            .ok_or(MessageError::TokenLength)?;
        let [hi, lo] = message_id.to_be_bytes();
        let mut w = Writer {
            buf,
            len: 0,
            number: 0,
        };
        w.put(&[0x40 | (ty.bits() << 4) | tkl, code.0, hi, lo])?;
        w.put(token)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), MessageError> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(MessageError::TooLarge)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Adds an option; numbers must not decrease.
    pub fn option(&mut self, number: u16, value: &[u8]) -> Result<(), MessageError> {
        let delta = number
            .checked_sub(self.number)
            .ok_or(MessageError::Format)?;
        let len = u16::try_from(value.len()).map_err(|_| MessageError::TooLarge)?;
        let (dn, dx) = nibble(delta);
        let (ln, lx) = nibble(len);
        self.put(&[(dn << 4) | ln])?;
        self.put(dx.as_slice())?;
        self.put(lx.as_slice())?;
        self.put(value)?;
        self.number = number;
        Ok(())
    }

    /// Adds an unsigned-integer option in its shortest form.
    pub fn uint_option(&mut self, number: u16, value: u32) -> Result<(), MessageError> {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        self.option(number, bytes.get(skip..).unwrap_or_default())
    }

    /// Adds the payload (none if empty) and returns the message's length.
    pub fn payload(mut self, payload: &[u8]) -> Result<usize, MessageError> {
        if !payload.is_empty() {
            self.put(&[0xff])?;
            self.put(payload)?;
        }
        Ok(self.len)
    }
}

/// The nibble and extension bytes of an option delta or length.
fn nibble(v: u16) -> (u8, heapless::Vec<u8, 2>) {
    let mut ext = heapless::Vec::new();
    let nibble = match v {
        0..=12 => v as u8,
        13..=268 => {
            let _ = ext.push((v - 13) as u8);
            13
        }
        _ => {
            let _ = ext.extend_from_slice(&(v - 269).to_be_bytes());
            14
        }
    };
    (nibble, ext)
}
