"""The demo's shop: a small schema and a writer that keeps changing it.

Customers and orders, with numeric, jsonb, timestamptz and array columns. The writer runs in a thread and
makes a steady mix of changes (about 5-15 transactions a second, some of several rows): new orders, status
updates, customer edits, purged orders, an occasional checkout of several orders in one transaction and an
occasional customer deleted with all their orders (ON DELETE CASCADE: one transaction, many deletes).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
import psycopg2.extras

SCHEMA = """
CREATE TABLE customers (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    tier       text NOT NULL DEFAULT 'standard',
    credit     numeric(12,2) NOT NULL DEFAULT 0,
    tags       text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'new',
    total       numeric(12,2) NOT NULL,
    items       jsonb NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz
);
-- Deletes carry the whole old row, not just the key.
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE customers REPLICA IDENTITY FULL;
"""

FIRST = ["Ada", "Grace", "Linus", "Margaret", "Edsger", "Barbara", "Ken", "Radia", "Donald", "Frances",
         "Alan", "Katherine", "Dennis", "Hedy", "Niklaus", "Sophie", "Tim", "Anita", "Guido", "Shafi"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Dijkstra", "Liskov", "Thompson", "Perlman", "Knuth",
        "Allen", "Turing", "Johnson", "Ritchie", "Lamarr", "Wirth", "Wilson", "Berners-Lee", "Borg", "Rossum"]
PRODUCTS = {"KB-101": ("keyboard", "49.90"), "MS-220": ("mouse", "19.95"), "MN-270": ("monitor", "229.00"),
            "HD-512": ("ssd 512GB", "64.50"), "CB-003": ("usb-c cable", "9.99"), "LT-140": ("laptop stand", "34.00"),
            "HS-330": ("headset", "79.00"), "WC-100": ("webcam", "59.90")}
TAGS = ["newsletter", "vip", "b2b", "early-adopter", "returns", "eu", "us", "apac"]
TIERS = ["standard", "silver", "gold", "platinum"]
NEXT_STATUS = {"new": "paid", "paid": "shipped", "shipped": "delivered"}
CUSTOMERS = (12, 40)  # the writer keeps the number of customers in this range


def create_schema(conn: psycopg2.extensions.connection, publication: str, seed: int = 15) -> None:
    """The tables, a publication FOR ALL TABLES and a few customers (made before the slot: not streamed)."""
    rng = random.Random(0)
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.execute(f'CREATE PUBLICATION "{publication}" FOR ALL TABLES')
        for _ in range(seed):
            _insert_customer(cur, rng)
    conn.commit()


def _insert_customer(cur: psycopg2.extensions.cursor, rng: random.Random) -> None:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    cur.execute(
        "INSERT INTO customers (name, email, tier, credit, tags) "
        "VALUES (%s, %s || '.' || nextval('customers_id_seq') || '@example.com', %s, %s, %s)",
        (f"{first} {last}", f"{first}.{last}".lower(), rng.choice(TIERS), f"{rng.randint(0, 50000) / 100:.2f}",
         rng.sample(TAGS, rng.randint(0, 2))),
    )


def _basket(rng: random.Random) -> tuple[str, psycopg2.extras.Json]:
    items = []
    total = 0.0
    for sku in rng.sample(sorted(PRODUCTS), rng.randint(1, 3)):
        name, price = PRODUCTS[sku]
        qty = rng.randint(1, 4)
        items.append({"sku": sku, "name": name, "qty": qty, "price": price})
        total += qty * float(price)
    return f"{total:.2f}", psycopg2.extras.Json(items)


class Writer:
    """Makes random shop changes over its own connection until `stop` is set."""

    def __init__(self, dsn: str, seed: int | None = None, pause: tuple[float, float] = (0.04, 0.2)) -> None:
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.pause = pause
        self.transactions = 0
        ops: list[tuple[Callable[[psycopg2.extensions.cursor], None], int]] = [
            (self.new_order, 30), (self.advance_order, 30), (self.edit_customer, 10), (self.new_customer, 8),
            (self.purge_order, 10), (self.checkout, 8), (self.drop_customer, 4),
        ]
        self._ops = [op for op, _ in ops]
        self._weights = [weight for _, weight in ops]

    def run(self, stop: threading.Event) -> None:
        conn = psycopg2.connect(self.dsn)
        try:
            while not stop.is_set():
                with conn.cursor() as cur:
                    self.rng.choices(self._ops, self._weights)[0](cur)
                conn.commit()
                self.transactions += 1
                stop.wait(self.rng.uniform(*self.pause))
        finally:
            conn.close()

    def _customer(self, cur: psycopg2.extensions.cursor) -> int | None:
        cur.execute("SELECT id FROM customers ORDER BY random() LIMIT 1")
        row = cur.fetchone()
        return int(row[0]) if row else None

    def _count(self, cur: psycopg2.extensions.cursor) -> int:
        cur.execute("SELECT count(*) FROM customers")
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def new_customer(self, cur: psycopg2.extensions.cursor) -> None:
        if self._count(cur) >= CUSTOMERS[1]:
            return self.edit_customer(cur)
        _insert_customer(cur, self.rng)

    def edit_customer(self, cur: psycopg2.extensions.cursor) -> None:
        if self.rng.random() < 0.5:
            cur.execute("UPDATE customers SET tier = %s WHERE id = (SELECT id FROM customers ORDER BY random() "
                        "LIMIT 1)", (self.rng.choice(TIERS),))
        else:
            cur.execute("UPDATE customers SET tags = array_append(tags, %s) WHERE id = (SELECT id FROM customers "
                        "WHERE cardinality(tags) < 3 ORDER BY random() LIMIT 1)", (self.rng.choice(TAGS),))

    def new_order(self, cur: psycopg2.extensions.cursor) -> None:
        customer = self._customer(cur)
        if customer is None:
            return self.new_customer(cur)
        total, items = _basket(self.rng)
        cur.execute("INSERT INTO orders (customer_id, total, items) VALUES (%s, %s, %s)", (customer, total, items))

    def advance_order(self, cur: psycopg2.extensions.cursor) -> None:
        cur.execute("SELECT id, status FROM orders WHERE status <> 'delivered' ORDER BY random() LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return self.new_order(cur)
        cur.execute("UPDATE orders SET status = %s, updated_at = now() WHERE id = %s", (NEXT_STATUS[row[1]], row[0]))

    def purge_order(self, cur: psycopg2.extensions.cursor) -> None:
        cur.execute("DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE status IN ('delivered', 'new') "
                    "ORDER BY random() LIMIT 1)")

    def checkout(self, cur: psycopg2.extensions.cursor) -> None:
        """Several orders for one customer and the customer's credit, in one transaction."""
        customer = self._customer(cur)
        if customer is None:
            return self.new_customer(cur)
        spent = 0.0
        for _ in range(self.rng.randint(2, 4)):
            total, items = _basket(self.rng)
            spent += float(total)
            cur.execute("INSERT INTO orders (customer_id, status, total, items) VALUES (%s, 'paid', %s, %s)",
                        (customer, total, items))
        cur.execute("UPDATE customers SET credit = credit + %s WHERE id = %s", (f"{spent / 10:.2f}", customer))

    def drop_customer(self, cur: psycopg2.extensions.cursor) -> None:
        """A customer and all their orders (ON DELETE CASCADE), when there are enough customers."""
        if self._count(cur) <= CUSTOMERS[0]:
            return self.new_customer(cur)
        cur.execute("DELETE FROM customers WHERE id = (SELECT customer_id FROM orders GROUP BY customer_id "
                    "ORDER BY count(*) DESC LIMIT 1)")
