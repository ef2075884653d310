#!/usr/bin/env python3
"""SQL peers of the SessionDB benchmark (run by `sessiondb-bench`).

Usage: peers.py CSV EXPERIMENT KEY SESSION_GAP_MS

Reads the flat CSV written by `ScaleWorkload::write_csv` (one row per event,
re-sent duplicates included) and computes, in DuckDB and in chDB, the exact
results SessionDB answers for EXPERIMENT over the whole range, per variation:
visitors (by first decision in (ts, id) order), conflicts, unique and total
conversions on KEY after exposure, their value sum and per-visitor sum of
squares, sessions (gap rule, via window functions) counted for the variation
with bounces, duration, pageviews and sessions with a conversion; visitors
per (variation, browser); and the approximate distinct visitors per
variation (`approx_count_distinct`, `uniqCombined`, `uniqHLL12`).

Prints one JSON object: {"duckdb": {...}, "chdb": {...}}; a peer that cannot
be imported is reported as {"error": "..."} instead, never skipped silently.
"""

import json
import sys
import time

CSV_COLUMNS = {
    "id": "VARCHAR", "visitor": "VARCHAR", "ts_ms": "BIGINT", "type": "VARCHAR",
    "key": "VARCHAR", "value": "BIGINT", "experiment": "VARCHAR",
    "variation": "VARCHAR", "browser": "VARCHAR",
}


def exact_queries(events, experiment, key, gap_ms, lag):
    """The exact SQL, shared by both peers. `events` is a deduplicated
    table; `lag` renders "previous ts of the visitor" in the dialect."""
    exposure = f"""
        SELECT visitor, variation, browser, t0 FROM (
          SELECT visitor, variation, browser, ts_ms AS t0,
                 row_number() OVER (PARTITION BY visitor ORDER BY ts_ms, id) AS rn
          FROM {events} WHERE experiment = '{experiment}') AS d
        WHERE rn = 1"""
    return {
        "visitors": f"""
            SELECT variation, count(*) FROM ({exposure}) AS x GROUP BY variation""",
        "breakdown": f"""
            SELECT variation, coalesce(nullif(browser, ''), '(none)') AS b, count(*)
            FROM ({exposure}) AS x GROUP BY variation, b""",
        "conflicts": f"""
            SELECT x.variation, count(*) FROM {events} AS e JOIN ({exposure}) AS x
              ON e.visitor = x.visitor
            WHERE e.experiment = '{experiment}' AND e.variation <> x.variation
            GROUP BY x.variation""",
        "conversions": f"""
            SELECT variation, sum(n), count(*), sum(s), sum(s * s) FROM (
              SELECT x.variation AS variation, e.visitor AS visitor, count(*) AS n,
                     sum(coalesce(e.value, 0)) AS s
              FROM {events} AS e JOIN ({exposure}) AS x ON e.visitor = x.visitor
              WHERE e.key = '{key}' AND e.ts_ms >= x.t0
              GROUP BY x.variation, e.visitor) AS v
            GROUP BY variation""",
        "sessions": f"""
            WITH marked AS (
              SELECT visitor, ts_ms, id, type, key,
                     -- the first event's "previous time" is 0: always a new session
                     CASE WHEN ts_ms - {lag} > {gap_ms} THEN 1 ELSE 0 END AS starts
              FROM {events}),
            numbered AS (
              SELECT *, sum(starts) OVER (PARTITION BY visitor ORDER BY ts_ms, id
                                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid
              FROM marked),
            sessions AS (
              SELECT n.visitor AS visitor, n.sid AS sid, min(x.variation) AS variation,
                     min(x.t0) AS t0, min(n.ts_ms) AS first_ts, max(n.ts_ms) AS last_ts,
                     count(*) AS events,
                     sum(CASE WHEN n.type = 'pageview' THEN 1 ELSE 0 END) AS pageviews,
                     max(CASE WHEN n.key = '{key}' AND n.ts_ms >= x.t0 THEN 1 ELSE 0 END) AS converted
              FROM numbered AS n JOIN ({exposure}) AS x ON n.visitor = x.visitor
              GROUP BY n.visitor, n.sid)
            SELECT variation, count(*), sum(CASE WHEN events = 1 THEN 1 ELSE 0 END),
                   sum(last_ts - first_ts), sum(pageviews), sum(converted)
            FROM sessions WHERE t0 <= last_ts GROUP BY variation""",
    }, exposure


def shape(rows_by_name):
    """Query rows → {variation: {metric: int}} plus the breakdown."""
    out = {}

    def cell(variation):
        return out.setdefault(str(variation), {
            "visitors": 0, "conflicts": 0, "total_conversions": 0,
            "unique_conversions": 0, "value_sum": 0, "value_sum_squares": 0,
            "sessions": 0, "bounced_sessions": 0, "duration_ms_sum": 0,
            "pageviews_sum": 0, "sessions_with_conversion": 0, "browsers": {}})

    for variation, count in rows_by_name["visitors"]:
        cell(variation)["visitors"] = int(count)
    for variation, browser, count in rows_by_name["breakdown"]:
        cell(variation)["browsers"][str(browser)] = int(count)
    for variation, count in rows_by_name["conflicts"]:
        cell(variation)["conflicts"] = int(count)
    for variation, total, unique, value_sum, squares in rows_by_name["conversions"]:
        c = cell(variation)
        c["total_conversions"], c["unique_conversions"] = int(total), int(unique)
        c["value_sum"], c["value_sum_squares"] = int(value_sum), int(squares)
    for variation, sessions, bounced, duration, pageviews, converted in rows_by_name["sessions"]:
        c = cell(variation)
        c["sessions"], c["bounced_sessions"] = int(sessions), int(bounced)
        c["duration_ms_sum"], c["pageviews_sum"] = int(duration), int(pageviews)
        c["sessions_with_conversion"] = int(converted)
    return out


def run_duckdb(csv, experiment, key, gap_ms):
    import duckdb
    con = duckdb.connect()
    columns = ", ".join(f"'{k}': '{v}'" for k, v in CSV_COLUMNS.items())
    started = time.perf_counter()
    con.execute(f"""CREATE TABLE raw AS SELECT * FROM read_csv('{csv}', header = true,
                    columns = {{{columns}}})""")
    con.execute("CREATE TABLE events AS SELECT DISTINCT * FROM raw")
    load_s = time.perf_counter() - started
    queries, exposure = exact_queries(
        "events", experiment, key, gap_ms,
        "coalesce(lag(ts_ms) OVER (PARTITION BY visitor ORDER BY ts_ms, id), 0)")
    started = time.perf_counter()
    rows = {name: con.execute(sql).fetchall() for name, sql in queries.items()}
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    approx = con.execute(f"""SELECT variation, approx_count_distinct(visitor)
                             FROM ({exposure}) AS x GROUP BY variation""").fetchall()
    approx_s = time.perf_counter() - started
    return {
        "version": duckdb.__version__, "load_s": load_s, "exact_s": exact_s,
        "approx_s": approx_s, "exact": shape(rows),
        "approx": {"approx_count_distinct": {str(v): int(n) for v, n in approx}},
    }


def run_chdb(csv, experiment, key, gap_ms):
    import chdb
    from chdb import session
    sess = session.Session()
    structure = ", ".join(
        f"{k} {'Int64' if v == 'BIGINT' else 'String'}" for k, v in CSV_COLUMNS.items())
    started = time.perf_counter()
    sess.query("CREATE DATABASE IF NOT EXISTS bench")
    sess.query(f"""CREATE TABLE bench.events ENGINE = MergeTree ORDER BY (visitor, ts_ms, id) AS
                   SELECT DISTINCT * FROM file('{csv}', CSVWithNames, '{structure}')""")
    load_s = time.perf_counter() - started
    queries, exposure = exact_queries(
        "bench.events", experiment, key, gap_ms,
        "lagInFrame(ts_ms, 1, toInt64(0)) OVER (PARTITION BY visitor ORDER BY ts_ms, id "
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)")

    def rows(sql):
        text = sess.query(sql, "JSONCompact").bytes().decode()
        return json.loads(text)["data"] if text.strip() else []

    started = time.perf_counter()
    result = {name: rows(sql) for name, sql in queries.items()}
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    approx = {
        fn: {str(v): int(n) for v, n in rows(
            f"SELECT variation, {fn}(visitor) FROM ({exposure}) AS x GROUP BY variation")}
        for fn in ("uniqCombined", "uniqHLL12")
    }
    approx_s = time.perf_counter() - started
    return {
        "version": chdb.__version__, "load_s": load_s, "exact_s": exact_s,
        "approx_s": approx_s, "exact": shape(result), "approx": approx,
    }


def main():
    csv, experiment, key, gap_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    out = {}
    for name, run in (("duckdb", run_duckdb), ("chdb", run_chdb)):
        try:
            out[name] = run(csv, experiment, key, gap_ms)
        except Exception as error:  # reported, never silent
            out[name] = {"error": f"{type(error).__name__}: {error}"}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
