//! Any datagram given to the CoAP parser and the server end yields a
//! message or a typed error, never a panic; a parsed message written back
//! with the same fields parses to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_coap::message::{Message, Writer};
use telemark_coap::server::Server;

fuzz_target!(|data: &[u8]| {
    let _ = Server::default().take(data);
    let Ok(message) = Message::parse(data) else {
        return;
    };
    let mut buf = vec![0u8; data.len() + 16];
    let mut w = Writer::new(
        &mut buf,
        message.ty,
        message.code,
        message.message_id,
        message.token,
    )
    .expect("a parsed token fits");
    for (number, value) in message.options() {
        w.option(number, value)
            .expect("parsed options are in order");
    }
    let n = w.payload(message.payload).expect("the buffer holds it");
    let again = Message::parse(&buf[..n]).expect("what was written parses");
    assert_eq!(
        (
            again.ty,
            again.code,
            again.message_id,
            again.token,
            again.payload
        ),
        (
            message.ty,
            message.code,
            message.message_id,
            message.token,
            message.payload
        )
    );
    assert!(again.options().eq(message.options()));
});
