//! libFuzzer entry for the `endpoint` property in `fuzz/src/` (exported from `lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcphop_fuzz::endpoint(data));
