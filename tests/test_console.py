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


def test_captured_records_are_the_callers_to_report(capsys):
    """capture_log_records collects this thread's warnings and keeps them off the console (the
    caller reports them); another thread's records and records after the block print as usual."""
    import threading

    from anygpt.utils import capture_log_records

    log = logging.getLogger("anygpt.modality.some_backend")
    with capture_log_records() as got:
        log.warning("repaired 2 codes")
        log.info("an info line is not collected")
        other = threading.Thread(target=log.warning, args=("another job's repair",))
        other.start()
        other.join()
    log.warning("after the block")
    assert [r.getMessage() for r in got] == ["repaired 2 codes"]
    out = capsys.readouterr()
    assert out.err == "warning: another job's repair\nwarning: after the block\n"
    assert out.out == "an info line is not collected\n"


def test_a_decode_repair_is_recorded_per_item_and_shown_once(image_tok_dir, tmp_path, capsys, caplog):
    """Backends log their repairs; detokenize records each in its item's index row and the user
    reads it once, with the item's id. Python's warning filters play no part: under
    ``python -W error`` a repair was an exception wherever nothing caught it (chat, serve, eval)."""
    import json
    import warnings

    from anygpt.cli import main
    from anygpt.modality.base import load_tokenizer

    tok = load_tokenizer(image_tok_dir)
    repair = f"demo-image decode: got 2 codes, expected 64; padded with {tok.filler}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tok.decode([1, 2]).size == (64, 64)
        assert [r.getMessage() for r in caplog.records] == [repair]
        capsys.readouterr()
        code = main(["detokenize", "--tokenizer", str(image_tok_dir), "--text", "<soim><👀1><👀2><eoim>",
                     "--out", str(tmp_path / "o")])
    got = capsys.readouterr()
    assert code == 0 and got.err == f"warning: span-0-image: {repair}\n"
    rows = [json.loads(line) for line in (tmp_path / "o" / "detokenized.jsonl").read_text().splitlines()]
    assert [(r["id"], r["warnings"]) for r in rows] == [("span-0-image", [repair])] and rows[0]["path"]
