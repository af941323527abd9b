"""The inverse of the uwsgi request codec (``_protocol/uwsgi.py``), as uWSGI's ``uwsgi_parse_vars`` reads a
request: the oracle of the codec's round trips and of the client tests' fake servers."""

from __future__ import annotations

from pytest_emperor._protocol.uwsgi import _HEADER, _U16


def decode_request(data: bytes) -> tuple[int, int, list[tuple[str, str]], bytes]:
    """Decode a complete uwsgi request: ``(modifier1, modifier2, vars, rest)``; strings are latin-1.

    ``rest`` is whatever follows the vars block (the body). Raises :class:`ValueError` on truncated or
    malformed input.
    """
    if len(data) < _HEADER.size:
        raise ValueError(f"uwsgi header needs 4 bytes, got {len(data)}")
    modifier1, size, modifier2 = _HEADER.unpack_from(data)
    end = _HEADER.size + size
    if len(data) < end:
        raise ValueError(f"uwsgi vars block announces {size} bytes but only {len(data) - 4} follow")
    pairs: list[tuple[str, str]] = []
    pos = _HEADER.size
    while pos < end:
        key, pos = _read_string(data, pos, end, "key")
        if not key:
            raise ValueError(f"empty uwsgi var key at offset {pos - 2}")
        value, pos = _read_string(data, pos, end, f"value of {key!r}")
        pairs.append((key.decode("latin-1"), value.decode("latin-1")))
    return modifier1, modifier2, pairs, data[end:]


def _read_string(data: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    """Read one u16le-length-prefixed string of the vars block that ends at ``end``."""
    if pos + 2 > end:
        raise ValueError(f"uwsgi vars block truncated in the length of a {what} at offset {pos}")
    (length,) = _U16.unpack_from(data, pos)
    pos += 2
    if pos + length > end:
        raise ValueError(f"uwsgi {what} at offset {pos} needs {length} bytes, the block has {end - pos}")
    return data[pos : pos + length], pos + length
