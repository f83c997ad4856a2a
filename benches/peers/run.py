"""Runs one conversion job with one peer, as the comparison benchmark asks.

Usage: run.py PEER JOB INPUT OUTPUT
       run.py count OUTPUT          prints the number of rows in a Parquet or CSV file

PEER is duckdb, polars, pyarrow or datafusion. JOB is one of:
  to-parquet   CSV or JSON Lines (by INPUT's extension) to Parquet, snappy
  filter-csv   CSV to CSV keeping active orders over 100, with four computed columns
  to-csv       Parquet to CSV

Each peer streams where its API allows it; pyarrow has no streaming JSON reader, so it reads
JSON Lines whole.
"""

import csv
import sys

WHERE = "status = 'active' AND amount > 100"
SELECT = "id, lower(email) AS email, amount * 1.19 AS gross, created_at"


def is_json(path):
    return path.endswith((".jsonl", ".ndjson", ".json"))


def duckdb_job(job, source, target):
    import duckdb

    con = duckdb.connect()
    reader = "read_json" if is_json(source) else "read_csv"
    if job == "to-parquet":
        query = f"SELECT * FROM {reader}('{source}')"
        options = "FORMAT parquet, COMPRESSION snappy"
    elif job == "filter-csv":
        query = f"SELECT {SELECT} FROM read_csv('{source}') WHERE {WHERE}"
        options = "FORMAT csv, HEADER"
    else:
        query = f"SELECT * FROM read_parquet('{source}')"
        options = "FORMAT csv, HEADER"
    con.execute(f"COPY ({query}) TO '{target}' ({options})")


def polars_job(job, source, target):
    import polars as pl

    if job == "to-parquet":
        frame = pl.scan_ndjson(source) if is_json(source) else pl.scan_csv(source)
        frame.sink_parquet(target, compression="snappy")
    elif job == "filter-csv":
        frame = (
            pl.scan_csv(source)
            .filter((pl.col("status") == "active") & (pl.col("amount") > 100))
            .select(
                pl.col("id"),
                pl.col("email").str.to_lowercase().alias("email"),
                (pl.col("amount") * 1.19).alias("gross"),
                pl.col("created_at"),
            )
        )
        frame.sink_csv(target)
    else:
        pl.scan_parquet(source).sink_csv(target)


def pyarrow_job(job, source, target):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if job == "to-parquet":
        if is_json(source):
            pq.write_table(pjson.read_json(source), target, compression="snappy")
            return
        reader = pcsv.open_csv(source)
        with pq.ParquetWriter(target, reader.schema, compression="snappy") as writer:
            for batch in reader:
                writer.write_batch(batch)
    elif job == "filter-csv":
        reader = pcsv.open_csv(source)
        writer = None
        for batch in reader:
            keep = pc.and_(
                pc.equal(batch["status"], "active"), pc.greater(batch["amount"], 100)
            )
            batch = batch.filter(keep)
            out = pa.record_batch(
                [
                    batch["id"],
                    pc.utf8_lower(batch["email"]),
                    pc.multiply(batch["amount"], 1.19),
                    batch["created_at"],
                ],
                names=["id", "email", "gross", "created_at"],
            )
            if writer is None:
                writer = pcsv.CSVWriter(target, out.schema)
            writer.write_batch(out)
        if writer is not None:
            writer.close()
    else:
        parquet = pq.ParquetFile(source)
        with pcsv.CSVWriter(target, parquet.schema_arrow) as writer:
            for batch in parquet.iter_batches():
                writer.write_batch(batch)


def datafusion_job(job, source, target):
    from datafusion import SessionContext

    ctx = SessionContext()
    if job == "to-parquet":
        if is_json(source):
            extension = "." + source.rsplit(".", 1)[-1]
            ctx.register_json("t", source, file_extension=extension)
        else:
            ctx.register_csv("t", source)
        ctx.sql(
            f"COPY (SELECT * FROM t) TO '{target}' STORED AS PARQUET "
            "OPTIONS ('format.compression' 'snappy')"
        ).collect()
    elif job == "filter-csv":
        ctx.register_csv("t", source)
        ctx.sql(
            f"COPY (SELECT {SELECT} FROM t WHERE {WHERE}) TO '{target}' STORED AS CSV"
        ).collect()
    else:
        ctx.register_parquet("t", source)
        ctx.sql(f"COPY (SELECT * FROM t) TO '{target}' STORED AS CSV").collect()


def count(path):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, newline="") as file:
        return sum(1 for _ in csv.reader(file)) - 1


def main():
    if sys.argv[1] == "count":
        print(count(sys.argv[2]))
        return
    peer, job, source, target = sys.argv[1:5]
    jobs = {
        "duckdb": duckdb_job,
        "polars": polars_job,
        "pyarrow": pyarrow_job,
        "datafusion": datafusion_job,
    }
    jobs[peer](job, source, target)


if __name__ == "__main__":
    main()
