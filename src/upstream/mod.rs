//! Upstream adapters' sans-IO parts: the lifecycle of one HTTP upstream
//! exchange (`exchange`). The I/O that drives them is in `reactor`.

pub(crate) mod exchange;
