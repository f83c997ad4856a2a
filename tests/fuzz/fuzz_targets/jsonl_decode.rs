//! Fuzz target: arbitrary bytes as JSON Lines, with the schema inferred or given as picked
//! by the first byte, decoded to the end. Any panic is a bug; every bad record must be
//! rejected with a line inside the input.

#![no_main]

use std::io::Cursor;

use aqueduct::{Format, SourceOptions, open_reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let schema = (choice & 1 != 0).then(|| {
        aqueduct::sql::parse_schema("fuzz", "id BIGINT, tags VARCHAR[], at TIMESTAMP, ok BOOLEAN")
            .expect("the fuzz schema parses")
    });
    let options = SourceOptions {
        schema,
        batch_size: usize::from(choice >> 3) + 1,
        infer_rows: 50,
        max_record_bytes: 1 << 16,
        ignore_unknown_keys: choice & 2 != 0,
        lossy_utf8: choice & 4 != 0,
        ..SourceOptions::default()
    };
    let reader = Box::new(Cursor::new(text.to_vec()));
    let Ok(mut source) = open_reader("fuzz.jsonl", reader, Format::Jsonl, &options) else {
        return;
    };
    let lines = text.iter().filter(|&&byte| byte == b'\n').count() as u64 + 1;
    while let Ok(Some(_batch)) = source.next_batch() {
        for rejected in source.take_rejected() {
            assert!(rejected.line >= 1 && rejected.line <= lines);
        }
    }
});
