"""One output channel: library code logs, the console handler prints plain lines (info on stdout,
``warning: …`` on stderr, rank 0 only for info), and a command's warnings reach the user that way."""

from __future__ import annotations

import logging

from anygpt.utils import console_logging


def test_records_print_as_plain_lines_and_only_rank_0_says_info(capsys, monkeypatch):
    console_logging()  # again (conftest made the first call): still one handler, one line per record
    log = logging.getLogger("anygpt.some.module")
    log.info("step 3: loss 1.5")
    log.warning("clip cut to 30 s")
    log.warning("warning: already prefixed")
    log.error("anygpt serve: turn failed: boom")
    got = capsys.readouterr()
    assert got.out == "step 3: loss 1.5\n"
    assert got.err == "warning: clip cut to 30 s\nwarning: already prefixed\nanygpt serve: turn failed: boom\n"
    monkeypatch.setenv("RANK", "1")
    log.info("said by every rank")
    log.warning("rank 1 sees this")
    got = capsys.readouterr()
    assert got.out == "" and got.err == "warning: rank 1 sees this\n"


def test_records_still_reach_pytest_capture(caplog):
    logging.getLogger("anygpt.train.loop").info("resumed from step 4")
    assert [r.getMessage() for r in caplog.records] == ["resumed from step 4"]


def test_a_command_warns_in_one_line(image_tok_dir, tmp_path, capsys):
    from anygpt.cli import main

    code = main(["detokenize", "--tokenizer", str(image_tok_dir), "--text", "just words", "--out", str(tmp_path / "o")])
    got = capsys.readouterr()
    assert code == 0 and got.err == "warning: no media spans found in the text\n"
    assert got.out.startswith("wrote 0 file(s) to ")
