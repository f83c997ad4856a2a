//! A deterministic generator of sample inputs of any size, for tests, benchmarks and demos.
//!
//! Two datasets: flat `orders` (CSV or JSON Lines) and nested `events` (JSON Lines with
//! structs, lists and a list of structs). The same seed and row count always give the same
//! bytes. Rows are formatted straight into the output buffer; memory does not grow with size.

use std::io::{self, Write};

/// Which dataset to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    /// Flat orders: id, customer, email, status, amount, quantity, country, created_at, note.
    Orders,
    /// Nested events: a user struct, a list of tags, a list of item structs, a nested session.
    Events,
}

/// The text format to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// How much to generate: rows stop at whichever limit comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateLimit {
    /// Stop after this many rows.
    pub rows: Option<u64>,
    /// Stop once this many bytes have been written.
    pub bytes: Option<u64>,
}

/// A small, fast deterministic generator (SplitMix64); statistical quality is ample for
/// sample data and it keeps the output identical across platforms and crate versions.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len() as u64) as usize]
    }
}

const STATUSES: [&str; 4] = ["active", "pending", "shipped", "cancelled"];
const COUNTRIES: [&str; 8] = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL"];
const DOMAINS: [&str; 4] = ["Example.com", "mail.org", "Shop.net", "corp.io"];
const NOTES: [&str; 6] = [
    "",
    "gift wrap",
    "leave at door, ring twice",
    "call \"before\" delivery",
    "fragile",
    "express",
];
const KINDS: [&str; 5] = ["view", "click", "add_to_cart", "purchase", "search"];
const TAGS: [&str; 6] = ["mobile", "promo", "returning", "new", "beta", "ab_test"];
const SYSTEMS: [&str; 4] = ["linux", "ios", "android", "windows"];

/// Seconds from the Unix epoch to 2024-01-01T00:00:00Z.
const BASE_EPOCH_SECONDS: i64 = 1_704_067_200;

/// Writes a dataset to `out`, returning the number of rows written.
pub fn generate(
    dataset: Dataset,
    format: TextFormat,
    limit: GenerateLimit,
    seed: u64,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let mut rng = SplitMix(seed);
    let mut line = Vec::with_capacity(1024);
    let mut written: u64 = 0;
    let mut rows: u64 = 0;
    if format == TextFormat::Csv {
        let header: &[u8] = match dataset {
            Dataset::Orders => {
                b"id,customer_id,email,status,amount,quantity,country,created_at,note\n"
            }
            Dataset::Events => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the nested events dataset is JSON Lines only",
                ));
            }
        };
        out.write_all(header)?;
        written += header.len() as u64;
    }
    while limit.rows.is_none_or(|max| rows < max) && limit.bytes.is_none_or(|max| written < max) {
        line.clear();
        match (dataset, format) {
            (Dataset::Orders, TextFormat::Csv) => order_csv(&mut rng, rows + 1, &mut line)?,
            (Dataset::Orders, TextFormat::Jsonl) => order_json(&mut rng, rows + 1, &mut line)?,
            (Dataset::Events, _) => event_json(&mut rng, rows + 1, &mut line)?,
        }
        out.write_all(&line)?;
        written += line.len() as u64;
        rows += 1;
    }
    out.flush()?;
    Ok(rows)
}

struct Order<'a> {
    customer_id: u64,
    email: Option<String>,
    status: &'a str,
    amount: Option<f64>,
    quantity: u64,
    country: &'a str,
    created_at: String,
    note: &'a str,
}

fn order(rng: &mut SplitMix, id: u64) -> Order<'static> {
    let customer_id = 1 + rng.below(100_000);
    let email = (rng.below(50) != 0).then(|| {
        format!(
            "User{customer_id}@{}",
            DOMAINS[rng.below(DOMAINS.len() as u64) as usize]
        )
    });
    let cents = 100 + rng.below(250_000);
    let amount = (rng.below(100) != 0).then_some(cents as f64 / 100.0);
    Order {
        customer_id,
        email,
        status: rng.pick(&STATUSES),
        amount,
        quantity: 1 + rng.below(9),
        country: rng.pick(&COUNTRIES),
        created_at: timestamp(id as i64 * 7 + rng.below(7) as i64),
        note: rng.pick(&NOTES),
    }
}

fn order_csv(rng: &mut SplitMix, id: u64, line: &mut Vec<u8>) -> io::Result<()> {
    let order = order(rng, id);
    let amount = order
        .amount
        .map(|amount| format!("{amount:.2}"))
        .unwrap_or_default();
    let note = if order.note.contains([',', '"']) {
        format!("\"{}\"", order.note.replace('"', "\"\""))
    } else {
        order.note.to_owned()
    };
    writeln!(
        line,
        "{id},{},{},{},{amount},{},{},{},{note}",
        order.customer_id,
        order.email.unwrap_or_default(),
        order.status,
        order.quantity,
        order.country,
        order.created_at,
    )
}

fn order_json(rng: &mut SplitMix, id: u64, line: &mut Vec<u8>) -> io::Result<()> {
    let order = order(rng, id);
    let email = order
        .email
        .map(|email| format!("\"{email}\""))
        .unwrap_or_else(|| "null".to_owned());
    let amount = order
        .amount
        .map(|amount| format!("{amount:.2}"))
        .unwrap_or_else(|| "null".to_owned());
    writeln!(
        line,
        concat!(
            "{{\"id\":{id},\"customer_id\":{},\"email\":{email},\"status\":\"{}\",",
            "\"amount\":{amount},\"quantity\":{},\"country\":\"{}\",\"created_at\":\"{}\",",
            "\"note\":{}}}"
        ),
        order.customer_id,
        order.status,
        order.quantity,
        order.country,
        order.created_at,
        serde_json::Value::from(order.note),
        id = id,
        email = email,
        amount = amount,
    )
}

fn event_json(rng: &mut SplitMix, id: u64, line: &mut Vec<u8>) -> io::Result<()> {
    let user_id = 1 + rng.below(50_000);
    let tag_count = rng.below(4) as usize;
    let tags: Vec<String> = (0..tag_count)
        .map(|_| format!("\"{}\"", rng.pick(&TAGS)))
        .collect();
    let item_count = rng.below(4);
    let items: Vec<String> = (0..item_count)
        .map(|_| {
            let price = (99 + rng.below(20_000)) as f64 / 100.0;
            format!(
                "{{\"sku\":\"SKU-{:05}\",\"qty\":{},\"price\":{price:.2}}}",
                rng.below(100_000),
                1 + rng.below(5)
            )
        })
        .collect();
    writeln!(
        line,
        concat!(
            "{{\"event_id\":{id},\"ts\":\"{}\",\"kind\":\"{}\",",
            "\"user\":{{\"id\":{user_id},\"name\":\"user{user_id}\",\"country\":\"{}\",",
            "\"premium\":{}}},\"tags\":[{}],\"items\":[{}],",
            "\"session\":{{\"id\":\"s-{:08x}\",\"device\":{{\"os\":\"{}\",\"version\":{}}}}}}}"
        ),
        timestamp(id as i64 * 3 + rng.below(3) as i64),
        rng.pick(&KINDS),
        rng.pick(&COUNTRIES),
        rng.below(5) == 0,
        tags.join(","),
        items.join(","),
        rng.below(1 << 32),
        rng.pick(&SYSTEMS),
        8 + rng.below(10),
        id = id,
        user_id = user_id,
    )
}

/// An ISO 8601 UTC timestamp `offset_seconds` after 2024-01-01T00:00:00Z.
fn timestamp(offset_seconds: i64) -> String {
    let seconds = BASE_EPOCH_SECONDS + offset_seconds;
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) date in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_valid_dates() {
        assert_eq!(timestamp(0), "2024-01-01T00:00:00Z");
        assert_eq!(timestamp(59 * 86_400 + 3_661), "2024-02-29T01:01:01Z");
        assert_eq!(timestamp(366 * 86_400), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn output_is_deterministic_and_limited() {
        let limit = GenerateLimit {
            rows: Some(50),
            bytes: None,
        };
        let mut first = Vec::new();
        let mut second = Vec::new();
        generate(Dataset::Orders, TextFormat::Csv, limit, 7, &mut first).unwrap();
        generate(Dataset::Orders, TextFormat::Csv, limit, 7, &mut second).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.iter().filter(|&&b| b == b'\n').count(), 51);

        let mut sized = Vec::new();
        let limit = GenerateLimit {
            rows: None,
            bytes: Some(10_000),
        };
        generate(Dataset::Events, TextFormat::Jsonl, limit, 1, &mut sized).unwrap();
        assert!(sized.len() >= 10_000 && sized.len() < 11_000);
        for line in sized.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<serde_json::Value>(line).unwrap();
        }
    }
}
