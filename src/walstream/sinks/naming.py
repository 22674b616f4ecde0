"""Broker names for PostgreSQL tables: NATS subjects and Kafka topics (docs/sinks.md, "Names").

PostgreSQL allows any character in a quoted identifier; brokers do not. Both escapes are reversible and
keep ordinary names (letters, digits, underscore) as they are:

- NATS subject token: '.', '*', '>', '%', whitespace and control characters become %XX (the UTF-8 bytes in
  upper-case hex); other characters, including non-ASCII letters, stay. So `public.order.items` (a table
  named "order.items") is the subject walstream.public.order%2Eitems, one token per name.
- Kafka topic: only [A-Za-z0-9_] stays; every other byte of the UTF-8 name becomes -XX (hex), since Kafka
  allows only [A-Za-z0-9._-] and uses '.' as our separator. A topic longer than 249 characters is refused.
"""

from __future__ import annotations

import re
import string

NATS_PREFIX = "walstream"
# --sink-transactions: COMMIT records go to a subject/topic of two parts, which no table's can be (a table's
# subject has three tokens; the default topic template gives three dot-separated parts, dots being escaped).
NATS_COMMIT_SUBJECT = "walstream.commit"
KAFKA_COMMIT_TOPIC = "walstream.commit"
KAFKA_MAX_TOPIC = 249
DEFAULT_KAFKA_TOPIC = "walstream.{schema}.{table}"

_NATS_SPECIAL = re.compile(r"[.*>%\s\x00-\x1f\x7f]")
_KAFKA_SPECIAL = re.compile(r"[^A-Za-z0-9_]")
_KAFKA_LEGAL = re.compile(r"^[A-Za-z0-9._-]+$")


def _hex(match: re.Match[str], mark: str) -> str:
    return "".join(f"{mark}{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))


def nats_token(name: str) -> str:
    if not name:
        return "%"  # an empty token is not allowed; '%' alone is no valid escape, so it cannot collide
    return _NATS_SPECIAL.sub(lambda m: _hex(m, "%"), name)


def nats_subject(schema: str, table: str) -> str:
    return f"{NATS_PREFIX}.{nats_token(schema)}.{nats_token(table)}"


def kafka_name(name: str) -> str:
    return _KAFKA_SPECIAL.sub(lambda m: _hex(m, "-"), name)


def check_kafka_template(template: str) -> str:
    """The --kafka-topic template: only {schema} and {table} fields, and legal topic characters around them."""
    accepted = "use a topic name with {schema} and {table}, e.g. walstream.{schema}.{table}"
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        sample = template.format(schema="s", table="t")
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"invalid --kafka-topic {template!r}: {exc}; {accepted}") from None
    if not fields <= {"schema", "table"}:
        raise ValueError(f"invalid --kafka-topic {template!r}: unknown field(s) "
                         f"{', '.join(sorted(fields - {'schema', 'table'}))}; {accepted}")
    if not _KAFKA_LEGAL.match(sample):
        raise ValueError(f"invalid --kafka-topic {template!r}: Kafka topics may hold only letters, digits, "
                         f"'.', '_' and '-'; {accepted}")
    return template


def kafka_topic(template: str, schema: str, table: str) -> str:
    """The table's topic; ValueError when the escaped name is longer than Kafka allows."""
    topic = template.format(schema=kafka_name(schema), table=kafka_name(table))
    if len(topic) > KAFKA_MAX_TOPIC:
        raise ValueError(f"the Kafka topic for {schema}.{table} would be {len(topic)} characters long, over "
                         f"Kafka's {KAFKA_MAX_TOPIC}: use a shorter --kafka-topic template")
    return topic
