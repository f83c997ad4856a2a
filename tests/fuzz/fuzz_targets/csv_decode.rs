//! Fuzz target: arbitrary bytes as CSV, with a dialect and a schema picked by the first
//! bytes, decoded to the end. Any panic is a bug; every bad record must be rejected with a
//! line inside the input.

#![no_main]

use std::io::Cursor;

use aqueduct::{CsvOptions, Format, SourceOptions, open_reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let csv = CsvOptions {
        header: choice & 1 == 0,
        delimiter: if choice & 2 == 0 { b',' } else { b';' },
        escape: (choice & 4 != 0).then_some(b'\\'),
        ..CsvOptions::default()
    };
    let schema = (choice & 8 != 0).then(|| {
        aqueduct::sql::parse_schema("fuzz", "id BIGINT, amount DOUBLE, name VARCHAR, at TIMESTAMP")
            .expect("the fuzz schema parses")
    });
    let options = SourceOptions {
        csv,
        schema,
        batch_size: usize::from(choice >> 4) + 1,
        infer_rows: 50,
        max_record_bytes: 1 << 16,
        lossy_utf8: choice & 16 != 0,
        ..SourceOptions::default()
    };
    let reader = Box::new(Cursor::new(text.to_vec()));
    let Ok(mut source) = open_reader("fuzz.csv", reader, Format::Csv, &options) else {
        return;
    };
    let lines = text.iter().filter(|&&byte| byte == b'\n' || byte == b'\r').count() as u64 + 1;
    while let Ok(Some(_batch)) = source.next_batch() {
        for rejected in source.take_rejected() {
            assert!(rejected.line >= 1 && rejected.line <= lines);
        }
    }
});
