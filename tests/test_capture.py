"""Capture files: the C block scanner and the msgspec line reader give the same frames, times, connections and
bad-line reasons, whatever the lines hold (escapes, non-ASCII, surrogates, blank lines, junk)."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.capture import CaptureWriter
from k2.capture import reader as rd
from k2.errors import CaptureError

pytestmark = pytest.mark.skipif(rd.__dict__.get("_read_blocks") is None, reason="no block reader")


def _scan():
    from k2.venues import _scan

    return _scan


def as_lists(chunks):
    out, bad = {}, []
    for ch in chunks:
        for ex, g in ch.by_exchange.items():
            o = out.setdefault(ex, ([], [], []))
            o[0].extend(g.frames.to_pylist() if isinstance(g.frames, pa.Array) else g.frames)
            o[1].extend(int(x) for x in g.ts_recv)
            o[2].extend(g.conn.to_pylist() if isinstance(g.conn, pa.Array) else g.conn)
        bad.extend((b.line_no, b.exchange, b.ts_recv, b.reason, b.raw) for b in ch.bad)
    return out, bad


def both(path, block_lines=3):
    fast = as_lists(rd._read_blocks(path, _scan(), block=block_lines * 60))
    slow = as_lists(rd._read_lines(path, 1000))
    assert fast == slow
    return fast


LINES = [
    b'{"exchange":"binance","ts_recv":1784073600002000,"frame":"{\\"e\\":\\"trade\\"}","conn":"c1"}',
    b'{"exchange":"kraken","ts_recv":1784073600002001,"frame":"caf\\u00e9 \\ud83d\\ude00 \\/ \\t \\\\ \\"","conn":null}',
    b'{"ts_recv":1784073600002002,"frame":"x","exchange":"coinbase"}',
    "{\"exchange\":\"coinbase\",\"ts_recv\":1784073600002003,\"frame\":\"raw \u00e9 non-ascii\",\"conn\":\"c\u00e9\"}".encode(),
    b'{"exchange":"binance","ts_recv":1784073600002004,"frame":"lone \\ud800 surrogate"}',
    b'{"exchange":"binance","ts_recv":1784073600002005,"frame":"bad \xff utf8"}',
    b'',
    b'   ',
    b'not json',
    b'{"exchange":"nasdaq","ts_recv":1784073600002006,"frame":"x"}',
    b'{"exchange":"binance","ts_recv":5,"frame":"x"}',
    b'{"exchange":"binance","ts_recv":"1784073600002007","frame":"x"}',
    b'{"exchange":"binance","ts_recv":1784073600002008,"frame":"x","extra":[1,{"a":"}"}]}',
    b'{"exchange":"binance","ts_recv":1784073600002009,"frame":"x","frame":"y"}',
    b'{"exchange":"binance","ts_recv":1784073600002010}',
    b'{"exchange":"binance","ts_recv":1784073600002011,"frame":"control \\u0001 char"}',
    b'{"exchange":"binance","ts_recv":1784073600002012,"frame":"x"} trailing',
    b'{"exchange":"binance","ts_recv":1784073600002013,"frame":"crlf"}\r',
    # the frame (with escapes) and the connection before the exchange: read through the scanner's scratch buffer
    b'{"conn":"c\\u00e9","frame":"{\\"p\\":\\"1.5\\"}","ts_recv":1784073600002014,"exchange":"kraken"}',
]


def test_tricky_lines_same_on_both_readers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n".join(LINES))  # no final newline: the last line still counts
    out, bad = both(path)
    frames = out["binance"][0] + out["kraken"][0] + out["coinbase"][0]
    assert '{"e":"trade"}' in frames and "café \U0001F600 / \t \\ \"" in frames and "raw é non-ascii" in frames
    assert "crlf" in frames
    assert ('{"p":"1.5"}', 1784073600002014, "c\u00e9") in zip(*out["kraken"])
    reasons = "\n".join(r for *_, r, _ in bad)
    assert "invalid UTF-8" in reasons and "unknown exchange 'nasdaq'" in reasons and "ts_recv out of range" in reasons
    assert len(bad) == 8, reasons


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["binance", "kraken", "coinbase"]), st.integers(1_300_000_000_000_000, 1_900_000_000_000_000),
                          st.text(max_size=40), st.one_of(st.none(), st.text(max_size=8))), max_size=25),
       st.integers(1, 7))
def test_random_captures_same_on_both_readers(tmp_path_factory, records, block_lines):
    path = tmp_path_factory.mktemp("cap") / "c.jsonl"
    with CaptureWriter(path) as w:
        for ex, ts, frame, conn in records:
            try:
                frame.encode("utf-8")
            except UnicodeEncodeError:
                continue
            w.write(ex, ts, frame, conn)
    out, bad = both(path, block_lines)
    expect = [(ex, ts, f, c or "") for ex, ts, f, c in records if _encodable(f, c)]
    got = sorted((ex, t, f, c) for ex, (fs, ts, cs) in out.items() for f, t, c in zip(fs, ts, cs))
    assert got == sorted(expect) and bad == []


# Frames as a capture holds them: long, with an escaped quote every few bytes, and now and then a `\/`, a `\\`, a
# control character or non-ASCII text; the C scanner unescapes sixteen bytes a step and stops at anything unusual.
FRAME_TEXT = st.text(alphabet=st.sampled_from('aZ09:,{}[]"""""\\\\///\n\t\x01\x7f\u00e9\u20ac\U0001F600 '),
                     max_size=300)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["binance", "kraken", "coinbase"]), FRAME_TEXT,
                          st.sampled_from([None, "c-1", 'q"\\'])), max_size=12),
       st.integers(1, 7), st.booleans())
def test_escape_heavy_frames_same_on_both_readers(tmp_path_factory, records, block_lines, slashes):
    path = tmp_path_factory.mktemp("cap") / "c.jsonl"
    with CaptureWriter(path) as w:
        for i, (ex, frame, conn) in enumerate(records):
            w.write(ex, 1_784_073_600_000_000 + i, frame, conn)
    if slashes:  # JSON may escape '/': the writer does not, other tools do
        path.write_bytes(path.read_bytes().replace(b"/", b"\\/"))
    out, bad = both(path, block_lines)
    got = sorted((ex, t, f, c) for ex, (fs, ts, cs) in out.items() for f, t, c in zip(fs, ts, cs))
    expect = [(ex, 1_784_073_600_000_000 + i, f, c or "") for i, (ex, f, c) in enumerate(records)]
    assert got == sorted(expect) and bad == []


def _encodable(*texts):
    try:
        for t in texts:
            if t is not None:
                t.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def test_compressed_captures_and_missing_file(tmp_path):
    gz = tmp_path / "c.jsonl.gz"
    zst = tmp_path / "c.jsonl.zst"
    for p in (gz, zst):
        with CaptureWriter(p) as w:
            w.write("binance", 1784073600002000, '{"a":1}', "c1")
    for p in (gz, zst):
        (frames, ts, conn), = both(p)[0].values()
        assert frames == ['{"a":1}'] and ts == [1784073600002000] and conn == ["c1"]
    with gzip.open(gz, "rb") as f:
        assert json.loads(f.read())["conn"] == "c1"
    with pytest.raises(CaptureError):
        list(rd.read_capture(tmp_path / "missing.jsonl"))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"this is not gzip")
    with pytest.raises(CaptureError):
        list(rd.read_capture(broken))


def test_frame_blocks_are_reused_only_once_released():
    """The scanner keeps released frame blocks for reuse: a block Arrow still holds is never written again."""
    scan = _scan().scan_capture

    def block(char, n=40):
        frame = char * 30 + '\\"x\\"'
        line = ('{"exchange":"kraken","ts_recv":1784073600002000,"frame":"' + frame + '","conn":"c"}\n').encode()
        _, _, groups = scan(line * n, rd.MIN_TS_US, rd.MAX_TS_RECV_US)
        return groups[1][5]  # kraken's frame text

    held = pa.py_buffer(block("a"))  # Arrow's reference is the only one left
    for char in "bcdefgh":  # released at once: recycled between these calls
        assert pa.py_buffer(block(char)).to_pybytes() == (char * 30 + '"x"').encode() * 40
    assert held.to_pybytes() == ("a" * 30 + '"x"').encode() * 40
    del held
    assert pa.py_buffer(block("z", 80)).to_pybytes() == ("z" * 30 + '"x"').encode() * 80
