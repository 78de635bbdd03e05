//! The server's end, sans-IO: a datagram in, the frame it carries and how
//! to answer it out. telemark-cloud's CoAP listener stands on it.

use crate::message::{option, Code, Message, MessageError, Type, Writer};

/// A request for a frame's path, ready to be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// The frame: the request's payload.
    pub frame: &'a [u8],
    reply: Type,
    message_id: u16,
    token: [u8; 8],
    token_len: u8,
}

/// Why a datagram is not a frame to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAFrame {
    /// No CoAP message at all: drop it, answer nothing.
    Malformed(MessageError),
    /// A message that is not a request, or a request for another path or
    /// with another method (answer it with 4.04 or 4.05 through
    /// [`Incoming`] if wanted; [`Server::take`] does).
    Other,
}

/// The server's CoAP end: which path frames come to.
#[derive(Clone, Copy, Debug)]
pub struct Server<'p> {
    /// Uri-Path segments, separated by `/` (`up` by default).
    pub path: &'p str,
}

impl Default for Server<'static> {
    fn default() -> Self {
        Server {
            path: crate::link::PATH,
        }
    }
}

impl<'p> Server<'p> {
    /// The frame `datagram` carries, if it is a POST or PUT to the path.
    ///
    /// ```
    /// use telemark_coap::message::{option, Code, Message, Type, Writer};
    /// use telemark_coap::server::Server;
    ///
    /// let mut request = [0u8; 64];
    /// let mut w = Writer::new(&mut request, Type::Non, Code::POST, 7, &[1, 2]).unwrap();
    /// w.option(option::URI_PATH, b"up").unwrap();
    /// let n = w.payload(b"sealed frame").unwrap();
    ///
    /// let incoming = Server::default().take(&request[..n]).unwrap();
    /// assert_eq!(incoming.frame, b"sealed frame");
    /// let mut answer = [0u8; 64];
    /// let m = incoming.answer(&mut answer, 99, Code::CHANGED, None, b"ack").unwrap();
    /// let answer = Message::parse(&answer[..m]).unwrap();
    /// assert_eq!((answer.ty, answer.code, answer.token), (Type::Non, Code::CHANGED, &[1, 2][..]));
    /// assert_eq!(answer.payload, b"ack");
    /// ```
    pub fn take<'a>(&self, datagram: &'a [u8]) -> Result<Incoming<'a>, NotAFrame> {
        let message = Message::parse(datagram).map_err(NotAFrame::Malformed)?;
        let request = matches!(message.ty, Type::Con | Type::Non)
            && matches!(message.code, Code::POST | Code::PUT);
        let mut wanted = self.path.split('/').filter(|s| !s.is_empty());
        let mut path = message.path();
        let same_path = loop {
            match (wanted.next(), path.next()) {
                (None, None) => break true,
                (Some(w), Some(p)) if w.as_bytes() == p => {}
                _ => break false,
            }
        };
        if !request || !same_path {
            return Err(NotAFrame::Other);
        }
        let mut token = [0u8; 8];
        let token_len = message.token.len().min(8);
        if let (Some(dst), Some(src)) = (token.get_mut(..token_len), message.token.get(..token_len))
        {
            dst.copy_from_slice(src);
        }
        Ok(Incoming {
            frame: message.payload,
            // A confirmable request gets its answer piggybacked on the ACK.
            reply: if message.ty == Type::Con {
                Type::Ack
            } else {
                Type::Non
            },
            message_id: message.message_id,
            token,
            token_len: token_len as u8,
        })
    }
}

impl Incoming<'_> {
    /// Writes the answer into `buf`: `code` (2.04 with the response frame
    /// as `payload`; 4.29 or 5.03 with a `max_age` for a device to wait;
    /// 4.xx for a refusal). `message_id` is the server's next id, used
    /// when the request was non-confirmable. Returns the answer's length.
    pub fn answer(
        &self,
        buf: &mut [u8],
        message_id: u16,
        code: Code,
        max_age: Option<u32>,
        payload: &[u8],
    ) -> Result<usize, MessageError> {
        let id = if self.reply == Type::Ack {
            self.message_id
        } else {
            message_id
        };
        let token = self
            .token
            .get(..usize::from(self.token_len))
            .unwrap_or_default();
        let mut w = Writer::new(buf, self.reply, code, id, token)?;
        if let Some(age) = max_age {
            w.uint_option(option::MAX_AGE, age)?;
        }
        w.payload(payload)
    }
}
