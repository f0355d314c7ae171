"""GET /logs reading: the last N lines, then only what was appended (logs -f), a partial line waits, and a
rotated (shorter) file starts over."""

from __future__ import annotations

from gpu_sharing.daemon.ops_api import read_log


def test_tail_then_follow_then_rotation(tmp_path):
    log = tmp_path / "m-0.log"
    assert read_log(log, 5, None) == ([], 0)
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    lines, end = read_log(log, 3, None)
    assert lines == ["line 7", "line 8", "line 9"] and end == log.stat().st_size
    with log.open("a") as f:
        f.write("line 10\npart")
    lines, end2 = read_log(log, 3, end)
    assert lines == ["line 10"] and end2 == end + len("line 10\n")  # "part" waits for its newline
    with log.open("a") as f:
        f.write("ial\n")
    assert read_log(log, 3, end2)[0] == ["partial"]
    log.write_text("fresh 1\n")  # copytruncate rotation: shorter than the offset
    assert read_log(log, 3, end2 + 100)[0] == ["fresh 1"]
