"""Property fuzzing (hypothesis) of everything that reads outside input: the token-string parser,
JSONL manifests and conversations, the template renderer and the media loaders. Each may only
fail with its documented error type, and never hang (per-example deadline + a hard test timeout).

Example counts are bounded (``EXAMPLES``) so the module runs in well under a minute; set
``ANYGPT_FUZZ_EXAMPLES=5000`` for a long run. ``tests/faults/atheris_media.py`` is the
coverage-guided (atheris) harness for the media loaders, run as a script, not in CI."""

from __future__ import annotations

import io
import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from anygpt.modality.media import load_audio, load_image
from anygpt.modality.base import MediaError
from anygpt.vocab import TokenStringError, VocabLayout

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

EXAMPLES = int(os.environ.get("ANYGPT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MEDIA_FUZZ = FUZZ  # each media example writes and decodes a tiny file: about 2 ms

LAYOUT = VocabLayout.from_profile("anygpt", 32000, {"image": 64, "speech": 32, "music": 16})

# fragments a hostile or broken model output is made of: span markers, code prefixes, digits
# (including non-ASCII digits), brackets, role markers
FRAGMENTS = sorted({s for m in LAYOUT.modalities for s in (m.start, m.end, "<" + m.prefix)}
                   | {">", "<", " ", "\n", "0", "7", "31", "63", "99999", "-1", "²", "٣", "１", "<|end|>", "<eoh>", "x"})
code_token = st.tuples(st.sampled_from([m.prefix for m in LAYOUT.modalities] + ["", "x"]),
                       st.one_of(st.integers(-5, 100).map(str), st.text(max_size=3),
                                 st.sampled_from(["²", "٣", "１", "1_0", " 1", "+1", "0x1", "١٢"]))).map(lambda t: f"<{t[0]}{t[1]}>")
span = st.tuples(st.sampled_from(LAYOUT.modalities), st.lists(code_token, max_size=6), st.booleans()).map(
    lambda t: t[0].start + "".join(t[1]) + (t[0].end if t[2] else ""))
token_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4), span), max_size=30).map("".join)


@FUZZ
@given(token_text)
def test_token_string_parser(text):
    try:
        pieces = LAYOUT.parse(text, strict=True)
    except TokenStringError:
        event("strict: TokenStringError")  # the documented error; anything else fails the test
    else:
        event(f"strict: parsed, {sum(kind != 'text' for kind, _ in pieces)} span(s)")
        check_pieces(pieces)
    check_pieces(LAYOUT.parse(text, strict=False))  # lenient: never raises


def check_pieces(pieces) -> None:
    sizes = {m.name: m.size for m in LAYOUT.modalities}
    for kind, value in pieces:
        if kind != "text":
            assert all(0 <= c < sizes[kind] for c in value), (kind, value)


@FUZZ
@given(st.sampled_from(["image", "speech", "music"]), st.lists(st.integers(0, 15), max_size=30))
def test_token_string_round_trip(modality, codes):
    text = "a" + LAYOUT.codes_to_string(modality, codes) + "b"
    assert LAYOUT.parse(text, strict=True) == [("text", "a"), (modality, codes), ("text", "b")]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=12)
row_objects = st.dictionaries(st.sampled_from(["id", "path", "text", "conversation", "role", "message", "x"]),
                              json_values, max_size=4)
jsonl_lines = st.one_of(row_objects.map(json.dumps), json_values.map(json.dumps),
                        st.binary(max_size=30).map(lambda b: b.decode("latin-1")), st.just("[" * 5000))


def write_lines(path: Path, lines: list[str], raw_tail: bytes) -> Path:
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + raw_tail)
    return path


@FUZZ
@given(st.lists(jsonl_lines, max_size=6), st.binary(max_size=8))
def test_manifest_reader(tmp_path_factory, lines, raw_tail):
    from anygpt.jobs.manifest import read_manifest

    path = write_lines(tmp_path_factory.mktemp("man") / "m.jsonl", lines, raw_tail)
    try:
        items, digest = read_manifest(path)
    except ValueError as e:
        assert str(path) in str(e)  # every error names the manifest
        event("rejected")
    else:
        event("read")
        assert items and len({i.id for i in items}) == len(items) and len(digest) == 16


@FUZZ
@given(st.lists(jsonl_lines, max_size=6), st.binary(max_size=8))
def test_conversation_reader(tmp_path_factory, lines, raw_tail):
    from anygpt.data.conversations import check_conversation, referenced_media
    from anygpt.utils import read_jsonl

    path = write_lines(tmp_path_factory.mktemp("conv") / "c.jsonl", lines, raw_tail)
    for n, obj in read_jsonl(path, lenient=True):  # never raises: bad lines come back as ValueError
        if isinstance(obj, ValueError):
            assert f"{path}:{n}:" in str(obj)
            continue
        try:
            convs = check_conversation(obj)
        except ValueError:
            continue
        referenced_media(convs)


@pytest.fixture(scope="module")
def grown(base_tokenizer_dir):
    from anygpt.vocab import load_base_tokenizer

    tok = load_base_tokenizer(base_tokenizer_dir)
    layout = VocabLayout.from_profile("default", len(tok), {"image": 64, "speech": 32, "music": 16})
    layout.grow_tokenizer(tok)
    return tok, layout


message_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS + ["<|user|>", "<|assistant|>", "<|system|>"]),
                                  st.text(max_size=6)), max_size=12).map("".join)
contents = st.one_of(message_text, st.lists(st.one_of(message_text, st.builds(
    lambda m, c: (m, c), st.sampled_from(["image", "speech", "music", "video"]), st.lists(st.integers(-2, 70), max_size=5))),
    max_size=3))
messages = st.lists(st.tuples(st.sampled_from(["system", "user", "assistant", "bot"]), contents), max_size=5)


@FUZZ
@given(st.sampled_from(["chat", "anygpt-chat", "anygpt-pretrain"]), messages, st.sampled_from(["assistant", "all", "none"]),
       st.booleans())
def test_template_renderer(grown, name, msgs, loss_on, gen_prompt):
    from anygpt.data.templates import MediaCodes, Message, get_template
    from anygpt.vocab import IGNORE_INDEX

    tok, layout = grown

    def content(c):
        if isinstance(c, str):
            return c
        return [x if isinstance(x, str) else MediaCodes(*x) for x in c]

    try:
        built = [Message(role, content(c)) for role, c in msgs]
        r = get_template(name).render(built, tok, layout, loss_on=loss_on, add_generation_prompt=gen_prompt)
    except (ValueError, KeyError) as e:  # documented: bad role/order, unknown modality, code out of range
        assert str(e)
        event(f"rejected: {type(e).__name__}")
        return
    event("rendered")
    assert len(r.input_ids) == len(r.labels)
    assert all(0 <= i < layout.padded_vocab_size for i in r.input_ids)
    assert all(lab in (IGNORE_INDEX, i) for lab, i in zip(r.labels, r.input_ids))


# ---------------------------------------------------------------- media loaders
def seed_files() -> dict[str, bytes]:
    """One small valid file per format, the starting point of the mutations."""
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {}
    img = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[ext] = buf.getvalue()
    wav = (0.1 * rng.standard_normal(800)).astype(np.float32)
    for fmt, ext in (("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")):
        buf = io.BytesIO()
        try:
            sf.write(buf, wav, 8000, format=fmt)
        except (sf.LibsndfileError, TypeError, ValueError):  # an old libsndfile without MP3/OGG writing
            continue
        out[ext] = buf.getvalue()
    return out


SEEDS = seed_files()


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


def load_any(path: Path):
    if path.suffix in (".png", ".jpg"):
        return load_image(path, 16, max_pixels=1 << 22)
    return load_audio(path, 8000, max_seconds=5.0)


media_input = st.tuples(
    st.sampled_from(sorted(SEEDS)),
    st.sampled_from(sorted(set(SEEDS) | {"ogg", "mp3"})),  # the extension it is saved with (often the wrong one)
    st.one_of(st.binary(max_size=200).map(lambda b: ("random", b)),
              st.tuples(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
                        st.none() | st.integers(0, 4000)).map(lambda t: ("mutated", t))))


@MEDIA_FUZZ
@given(media_input)
def test_media_loaders_only_raise_media_error(tmp_path_factory, case):
    fmt, ext, (kind, payload) = case
    data = payload if kind == "random" else mutate(SEEDS[fmt], *payload)
    path = tmp_path_factory.mktemp("media") / f"f.{ext}"
    path.write_bytes(data)
    try:
        out = load_any(path)
    except MediaError as e:
        assert str(e).startswith(f"{path}: ")  # names the file
        event(f"{kind} {ext}: MediaError")
        return
    event(f"{kind} {ext}: loaded")
    if ext in ("png", "jpg"):
        assert out.size == (16, 16) and out.mode == "RGB"
    else:
        assert out.dtype == np.float32 and out.ndim == 1 and out.size and np.isfinite(out).all()
