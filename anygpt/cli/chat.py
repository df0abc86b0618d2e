"""Chat with an exported model: interactively, from a JSONL script, or single-shot.

Examples:
  anygpt chat --model out/model                       # terminal chat
  anygpt chat --model out/model --script inference/example_prompts.jsonl --transcript out/transcript.jsonl
  anygpt chat --model out/model --single "text|image|a red circle on white"
  anygpt chat --model out/model --single "image|text|inference/example_media/red_circle.png"
  anygpt chat --model out/model --preset reference --set temperature=0.8 --set max_new_tokens=300

In the terminal chat:
  /image PATH, /speech PATH, /music PATH   attach a file to the next message
  /output image|speech|music|text|auto     force the modality of the next replies
  /reset                                   forget the conversation
  /quit                                    leave
Generated media are written to --out with names like turn003_image_0.png.
"""

from __future__ import annotations

import argparse
import json
import sys

from anygpt.config import parse_assignments
from anygpt.inference.settings import PRESETS

HELP = "chat with a model: terminal, --script JSONL, or --single 'in|out|data'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model directory (a bundle)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="generation preset (default: reference for a released AnyGPT model or one made from it, else demo)")
    p.add_argument("--force-start", action=argparse.BooleanOptionalAction, default=None,
                   help="end the prompt of a media reply with its start marker (<soim>…); default: ours do, "
                        "the reference templates do not (as the reference)")
    p.add_argument("--instructions", metavar="PATH",
                   help="--single: instruction pools (the reference's instruction modules or a JSON export; default ours)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VAL",
                   help="override a generation setting for every output (temperature, top_p, top_k, "
                        "repetition_penalty, max_new_tokens, do_sample, num_beams)")
    p.add_argument("--out", default="chat_out", help="folder for generated media (default chat_out)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--system", default=None, help="system message (default: the template's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--script", help="JSONL file of turns to run non-interactively")
    mode.add_argument("--single", metavar="IN|OUT|DATA[|VOICE]", help="the reference base model's single-shot form")
    p.add_argument("--transcript", help="with --script: JSONL transcript to write (default: print to stdout)")


def run(args: argparse.Namespace) -> int:
    from anygpt.inference.chat import ChatSession
    from anygpt.model.bundle import load_bundle

    if args.transcript and not args.script:
        raise ValueError("--transcript is only used with --script")
    if args.script:
        from anygpt.inference.script import read_script

        turns = read_script(args.script)  # a bad line fails before the model loads
    pools = None
    if args.instructions:
        from anygpt.data.instructions import load_instruction_pools

        pools = load_instruction_pools(args.instructions)  # a bad file fails before the model loads
    bundle = load_bundle(args.model, device=args.device)
    session = ChatSession(bundle, preset=args.preset, out_dir=args.out, overrides=parse_assignments(args.set, "--set"),
                          system=args.system, seed=args.seed, force_start=args.force_start)
    print(f"anygpt chat: template {bundle.template.id}, preset {session.preset}", file=sys.stderr)
    if args.script:
        from anygpt.inference.script import run_script

        transcript = args.transcript or None
        if transcript is None:
            import tempfile
            from pathlib import Path

            transcript = str(Path(tempfile.mkdtemp(prefix="anygpt-transcript-")) / "transcript.jsonl")
        records = run_script(session, turns, transcript)
        if not args.transcript:
            for r in records:
                print(json.dumps(r, ensure_ascii=False))
        failed = [r for r in records if "error" in r]
        for r in failed:
            print(f"anygpt chat: turn {r['turn']}: {r['error']}", file=sys.stderr)
        print(f"{len(records)} turn(s), {len(failed)} failed" + (f"; transcript {args.transcript}" if args.transcript else ""),
              file=sys.stderr)
        return 1 if failed else 0
    if args.single:
        from anygpt.inference.script import run_single

        reply = run_single(session, args.single, seed=args.seed or 0, pools=pools)
        print_reply(reply)
        return 0
    return interactive(session)


def print_reply(reply) -> None:
    if reply.text:
        print(reply.text)
    for m in reply.media:
        print(f"[{m['modality']}] saved {m['path']}")
    for n in reply.notes:
        print(f"(note: {n})")


def interactive(session) -> int:
    """The terminal loop: slash commands attach files and steer the reply's modality."""
    from anygpt.inference.chat import Attachment
    from anygpt.inference.settings import OUTPUTS
    from anygpt.modality.base import MediaError

    pending: list[Attachment] = []
    output: str | None = None
    print("anygpt chat: type a message; /image /speech /music PATH attach, /output MODALITY, /reset, /quit")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            arg = arg.strip()
            if cmd == "/quit":
                return 0
            if cmd == "/reset":
                session.reset()
                pending.clear()
                print("(conversation reset)")
            elif cmd in ("/image", "/speech", "/music"):
                if not arg:
                    print(f"usage: {cmd} PATH")
                    continue
                pending.append(Attachment(cmd[1:], arg))
                print(f"(attached {cmd[1:]} {arg} to the next message)")
            elif cmd == "/output":
                if arg not in (*OUTPUTS, "auto"):
                    print("usage: /output image|speech|music|text|auto")
                    continue
                output = None if arg == "auto" else arg
                print(f"(replies: {arg})")
            else:
                print("unknown command; try /image, /speech, /music, /output, /reset, /quit")
            continue
        print("bot> ", end="", flush=True)
        streamed: list[str] = []

        def show(t: str) -> None:
            streamed.append(t)
            print(t, end="", flush=True)

        try:
            reply = session.send(line, pending, output, on_text=show)
        except (MediaError, FileNotFoundError, ValueError) as e:
            print(f"\n(error: {e})")
            continue
        finally:
            pending = []
        print("" if streamed else reply.text)  # beam search does not stream
        for m in reply.media:
            print(f"[{m['modality']}] saved {m['path']}")
        for n in reply.notes:
            print(f"(note: {n})")
