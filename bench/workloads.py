"""The benchmark's workloads: tables (created before any slot) and the SQL that writes each workload.

Every workload is written server-side (DO blocks with COMMIT inside the loop), so writing is fast and its
WAL is the same whoever writes it. Row shapes are ordinary OLTP rows; `wide` has a jsonb document and about
1 kB of text per row (below the TOAST threshold, so every byte is in the WAL and in pgoutput's message).
"""

from __future__ import annotations

from dataclasses import dataclass

TABLES = [
    """CREATE TABLE bulk (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2), label text,
       created timestamptz NOT NULL)""",
    """CREATE TABLE small (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2), label text,
       created timestamptz NOT NULL)""",
    """CREATE TABLE upd (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2), label text,
       created timestamptz NOT NULL)""",
    "CREATE TABLE wide (id bigint PRIMARY KEY, doc jsonb NOT NULL, body text NOT NULL)",
    "CREATE TABLE lat (id bigserial PRIMARY KEY, t_ns bigint NOT NULL, note text)",
    "CREATE PUBLICATION pub FOR ALL TABLES",
]

_ROW = "g, g % 1000, (g % 100000) / 100.0, 'label-' || g, now()"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str  # for the table
    rows: int  # row events it produces
    prepare: tuple[str, ...]  # run before the base slot is created (not decoded)
    write: tuple[str, ...]  # run while the base slot is held (decoded)


def workloads(scale: float) -> list[Workload]:
    """The four workloads; scale 1.0 is the issue's sizes (1M, 200k, 300k, and 100k wide rows)."""

    def n(full: int, minimum: int) -> int:
        return max(minimum, int(full * scale))

    bulk_txns = n(1000, 2)
    small = n(200_000, 200)
    upd_txns = n(300, 1)
    wide_txns = n(100, 1)
    return [
        Workload(
            "bulk", "insert, 1,000-row transactions", bulk_txns * 1000,
            ("TRUNCATE bulk",),
            (f"""DO $$ BEGIN FOR b IN 0..{bulk_txns - 1} LOOP
                   INSERT INTO bulk SELECT {_ROW} FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g;
                   COMMIT; END LOOP; END $$""",),
        ),
        Workload(
            "small", "insert, 1-row transactions", small,
            ("TRUNCATE small",),
            (f"""DO $$ BEGIN FOR g IN 1..{small} LOOP
                   INSERT INTO small VALUES (g, g % 1000, (g % 100000) / 100.0, 'label-' || g, now());
                   COMMIT; END LOOP; END $$""",),
        ),
        Workload(
            "update", "update, 1,000-row transactions", upd_txns * 1000,
            ("TRUNCATE upd",
             f"INSERT INTO upd SELECT {_ROW} FROM generate_series(1, {upd_txns * 1000}) g",
             "VACUUM ANALYZE upd"),
            (f"""DO $$ BEGIN FOR b IN 0..{upd_txns - 1} LOOP
                   UPDATE upd SET amount = amount + 1, label = label || '+'
                    WHERE id BETWEEN b * 1000 + 1 AND b * 1000 + 1000;
                   COMMIT; END LOOP; END $$""",),
        ),
        Workload(
            "wide", "wide rows (jsonb + 1 kB text), 1,000-row transactions", wide_txns * 1000,
            ("TRUNCATE wide",),
            (f"""DO $$ BEGIN FOR b IN 0..{wide_txns - 1} LOOP
                   INSERT INTO wide SELECT g,
                     jsonb_build_object('id', g, 'name', 'customer ' || g, 'active', g % 2 = 0,
                                        'score', (g % 1000) / 7.0, 'tags', jsonb_build_array('a', 'b', g % 10),
                                        'address', jsonb_build_object('city', 'City ' || (g % 100),
                                                                      'zip', lpad((g % 99999)::text, 5, '0'))),
                     repeat(md5(g::text), 32)
                   FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g;
                   COMMIT; END LOOP; END $$""",),
        ),
    ]
