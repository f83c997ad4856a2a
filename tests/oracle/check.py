"""Independent check of aqueduct's Parquet output with DuckDB and pyarrow.

Usage: check.py INPUT PARQUET [--where SQL] [--select SQL]

DuckDB reads INPUT (CSV or JSONL, with its own inference), applies the same WHERE and SELECT
as aqueduct did, and compares the rows with the Parquet file as multisets. pyarrow reads the
Parquet file too, and its table is compared with DuckDB's reading of the same file. Prints a
JSON report; exits 1 on any difference.
"""

import argparse
import json
import sys

import duckdb
import pyarrow.parquet as pq


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("parquet")
    parser.add_argument("--where")
    parser.add_argument("--select", default="*")
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    reader = "read_csv" if args.input.endswith((".csv", ".csv.gz")) else "read_json"
    where = f"WHERE {args.where}" if args.where else ""
    expected = f"SELECT {args.select} FROM {reader}('{args.input}') {where}"
    actual = f"SELECT * FROM read_parquet('{args.parquet}')"

    def count(query: str) -> int:
        return con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]

    table = pq.read_table(args.parquet)
    con.register("pyarrow_table", table)
    report = {
        "expected_rows": count(expected),
        "parquet_rows": count(actual),
        "missing": count(f"{expected} EXCEPT ALL {actual}"),
        "extra": count(f"{actual} EXCEPT ALL {expected}"),
        "pyarrow_rows": table.num_rows,
        "pyarrow_differs": count(f"SELECT * FROM pyarrow_table EXCEPT ALL {actual}")
        + count(f"{actual} EXCEPT ALL SELECT * FROM pyarrow_table"),
    }
    print(json.dumps(report))
    same = (
        report["missing"] == 0
        and report["extra"] == 0
        and report["expected_rows"] == report["parquet_rows"] == report["pyarrow_rows"]
        and report["pyarrow_differs"] == 0
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
