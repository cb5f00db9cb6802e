//! Fuzz target: the incremental frame decoder and the message codec must
//! return errors, never panic or allocate without bound, whatever the bytes
//! and however they are split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec;
use protocol::frame::FrameDecoder;
use protocol::message::{CoordinatorMessage, PeerMessage, WorkerMessage};

fn drain<M: codec::Message>(data: &[u8], split: usize) {
    let mut decoder = FrameDecoder::<M>::new(1 << 20);
    for piece in data.chunks(split) {
        decoder.push(piece);
        loop {
            match decoder.poll() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |&byte| usize::from(byte) + 1);
    drain::<PeerMessage>(data, split);
    drain::<WorkerMessage>(data, data.len().max(1));
    let _ = codec::decode::<CoordinatorMessage>(data);
    let _ = codec::decode::<WorkerMessage>(data);
});
