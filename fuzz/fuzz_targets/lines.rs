//! libFuzzer entry for the `lines` property in `fuzz/src/` (exported from `lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcphop_fuzz::lines(data));
