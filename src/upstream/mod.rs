//! Upstream adapters' sans-IO parts: the lifecycle of one HTTP upstream
//! exchange (`exchange`), and the schedule of a session's upstream streams
//! (GET stream, gate, continuations: `streams`). The I/O that drives them is
//! in `reactor`.

pub(crate) mod exchange;
pub(crate) mod streams;
