"""The one JSONL helper set (``anygpt.utils``): what one writer writes, every reader reads back,
and a bad line is one error naming ``file:line``."""

from __future__ import annotations

from pathlib import Path

import pytest

from anygpt.utils import append_jsonl, read_jsonl, write_jsonl


def test_written_and_appended_records_read_back_in_order(tmp_path):
    path = tmp_path / "log.jsonl"
    write_jsonl(path, [{"id": "a", "text": "größe ✓"}, {"id": "b", "path": Path("media/x.png")}])
    append_jsonl(path, {"id": "c", "n": 3})
    append_jsonl(path, {"id": "d", "nested": {"k": [1, 2]}})
    got = list(read_jsonl(path))
    assert got == [(1, {"id": "a", "text": "größe ✓"}), (2, {"id": "b", "path": "media/x.png"}),
                   (3, {"id": "c", "n": 3}), (4, {"id": "d", "nested": {"k": [1, 2]}})]
    assert "größe" in path.read_text(encoding="utf-8")  # text stays readable, not \\u-escaped
    write_jsonl(path, [{"id": "z"}])  # a rewrite replaces the file whole
    assert list(read_jsonl(path)) == [(1, {"id": "z"})]


def test_a_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"id": "a"}])
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n{not json\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"rows\.jsonl:3: not valid JSON"):
        list(read_jsonl(path))
    lenient = list(read_jsonl(path, lenient=True))
    assert lenient[0] == (1, {"id": "a"}) and [n for n, _ in lenient] == [1, 3, 4]
    assert "rows.jsonl:4: expected a JSON object, got list" in str(lenient[2][1])
