from __future__ import annotations

import pytest

from walstream.errors import WalstreamError
from walstream.lsn import format_lsn, parse_lsn
from walstream.source.stream import parse_duration, protocol_version, quote_publication


@pytest.mark.parametrize(("version", "proto"), [(100000, 1), (130012, 1), (140000, 2), (150018, 3),
                                                 (160000, 4), (180001, 4)])
def test_protocol_version_is_the_highest_both_sides_speak(version: int, proto: int) -> None:
    assert protocol_version(version) == proto


@pytest.mark.parametrize(("text", "seconds"), [("1min", 60), ("500ms", 0.5), ("0", 0), ("10s", 10),
                                               ("2h", 7200), ("1d", 86400), ("250", 0.25)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(WalstreamError, match="unexpected duration '5 fortnights'"):
        parse_duration("5 fortnights")


def test_publication_names_are_always_quoted() -> None:
    assert quote_publication("pub") == '"pub"'
    assert quote_publication('My "Pub", x') == '"My ""Pub"", x"'


def test_lsn_round_trip() -> None:
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn(format_lsn(2**64 - 1)) == 2**64 - 1
    with pytest.raises(ValueError, match="invalid LSN"):
        parse_lsn("nope")
