//! The pipeline input readers (`ferroformer pipeline ... -` and `--input-file`): arbitrary
//! bytes read as lines and JSONL records. Invalid input is an error, never a panic.
#![no_main]

use ferroformer::pipelines::inputs::{parse_inputs, read_inputs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let from_reader = read_inputs(data, "fuzz input");
    if let Ok(text) = std::str::from_utf8(data) {
        let parsed = parse_inputs(text, "fuzz input");
        // Both readers agree, and there is at most one input per line.
        assert_eq!(parsed.is_ok(), from_reader.is_ok());
        if let Ok(inputs) = parsed {
            assert!(inputs.len() <= text.lines().count());
            assert_eq!(Some(&inputs), from_reader.as_ref().ok());
        }
    } else {
        assert!(from_reader.is_err(), "non-UTF-8 input must be refused");
    }
});
