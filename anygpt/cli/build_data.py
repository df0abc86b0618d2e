"""Build training sets: alignment pairs (stage pretrain) or instruction conversations (stage sft).

Output: a Hugging Face dataset directory (columns input_ids, labels [-100 = no loss], modality,
direction, source, length) with anygpt_data.json (layout, template, tokenizer fingerprints);
training refuses data whose layout or tokenizers differ from the model's.

Examples:
  # code shards + a recipe (datasets, weights, direction probability, template)
  anygpt build-data --stage pretrain --recipe data_pipeline/pretrain_recipe.yaml --tokenizer grown/ --out data/pt
  # the reference's pretokenized JSONL ({"text", "image"|"speech"|"music": "<soim>…<eoim>"})
  anygpt build-data --stage pretrain --anygpt-jsonl laion.jsonl commonvoice.jsonl --tokenizer grown-anygpt/ --out data/pt
  # AnyInstruct conversations; media by path (<image:a.png>) are tokenized with the cards
  anygpt build-data --stage sft --conversations convs.jsonl --tokenizer grown/ \\
      --cards image=cards/image,speech=cards/speech,music=cards/music --out data/sft

A --recipe build renders in batches (--num-proc N processes, same output for any N) and writes
Arrow shards as it goes; rerun an interrupted build with the same arguments to continue it.

Bad lines stop the job with one error naming file:line; with --skip-bad they are written to
OUT/errors.jsonl and the job goes on.
"""

from __future__ import annotations

import argparse

from anygpt.cli import CLIError
from anygpt.vocab import MODALITIES

HELP = "code shards + text → alignment or instruction training sets (also ingests AnyGPT JSONL)"


def parse_mapping(text: str | None, flag: str) -> dict[str, str]:
    """``image=PATH,speech=PATH`` → dict."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        name, sep, val = part.partition("=")
        if not sep or name.strip() not in MODALITIES or not val.strip():
            raise CLIError(f"{flag} expects modality=PATH[,modality=PATH] with modality image, speech or music; got {part!r}")
        out[name.strip()] = val.strip()
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", required=True, choices=["pretrain", "sft"])
    p.add_argument("--tokenizer", required=True,
                   help="grown tokenizer directory (`anygpt vocab --out`), a bundle, or a released AnyGPT directory")
    p.add_argument("--out", required=True, help="output dataset directory")
    src = p.add_argument_group("inputs")
    src.add_argument("--recipe", help="pretrain: recipe YAML (datasets of code shards, weights, t2x_prob, template)")
    src.add_argument("--anygpt-jsonl", nargs="+", metavar="FILE", help="pretrain: the reference's pretokenized JSONL")
    src.add_argument("--conversations", nargs="+", metavar="FILE", help="sft: AnyInstruct conversation JSONL files")
    p.add_argument("--cards", help="sft: tokenizer cards for media by path, e.g. image=CARD,speech=CARD,music=CARD")
    p.add_argument("--shards", help="sft: code shards to look media up by path/id first, e.g. image=DIR")
    p.add_argument("--template", help="template name (default: the layout profile's: chat / anygpt-pretrain / anygpt-chat)")
    p.add_argument("--instructions", metavar="PATH",
                   help="pretrain: instruction pools to draw from: the reference's other2text/text2other_instructions.py "
                        "(a file, or a folder such as an OpenMOSS/AnyGPT checkout) or a JSON export (default: ours)")
    p.add_argument("--t2x-prob", type=float, default=0.5, help="--anygpt-jsonl: probability of text→X per line (default 0.5)")
    p.add_argument("--both-directions", action="store_true", help="--anygpt-jsonl: one sample per direction per line")
    p.add_argument("--loss-on", default="assistant", choices=["assistant", "all"],
                   help="pretrain: loss on the response only (default) or on every token, as the reference did")
    p.add_argument("--max-length", type=int, help="sft: split a dialogue longer than this many tokens between rounds; "
                   "a single round longer than this follows --overlong")
    p.add_argument("--overlong", choices=["drop", "truncate"], default="drop",
                   help="sft: a single round longer than --max-length is dropped (recorded; an error without --skip-bad) "
                   "or cut (default drop; pretrain: the recipe's overlong)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-proc", type=int, default=1,
                   help="--recipe: render samples in N processes (the output is the same for any N)")
    p.add_argument("--skip-bad", action="store_true", help="record bad lines in OUT/errors.jsonl and go on")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from anygpt.data.datainfo import read_data_info, summary_lines
    from anygpt.data.pretrain import build_pretrain_from_recipe, build_pretrain_from_reference
    from anygpt.data.recipe import PretrainRecipe
    from anygpt.data.tokenizer import load_grown_tokenizer

    tok, layout = load_grown_tokenizer(args.tokenizer)
    if args.stage == "pretrain":
        if bool(args.recipe) == bool(args.anygpt_jsonl):
            raise CLIError("--stage pretrain needs exactly one of --recipe or --anygpt-jsonl")
        if args.recipe:
            recipe = PretrainRecipe.load(args.recipe)
            if args.template:
                recipe.template = args.template
            if args.loss_on != "assistant":
                recipe.loss_on = args.loss_on
            if args.instructions:
                recipe.instructions = args.instructions
            if args.num_proc < 1:
                raise CLIError("--num-proc must be at least 1")
            out = build_pretrain_from_recipe(recipe, tok, layout, args.out, args.skip_bad, args.overwrite,
                                             args.num_proc)
        else:
            if not 0.0 <= args.t2x_prob <= 1.0:
                raise CLIError("--t2x-prob must be in [0, 1]")
            out = build_pretrain_from_reference(args.anygpt_jsonl, tok, layout, args.out, args.template,
                                                args.t2x_prob, args.both_directions, args.seed, args.loss_on,
                                                args.skip_bad, args.overwrite, args.instructions)
    else:
        if not args.conversations:
            raise CLIError("--stage sft needs --conversations FILE [FILE …]")
        from anygpt.data.sft import build_sft
        from anygpt.modality.base import load_tokenizer

        cards = parse_mapping(args.cards, "--cards")
        tokenizers = {m: load_tokenizer(c) for m, c in cards.items()}
        out = build_sft(args.conversations, tok, layout, args.out, tokenizers, parse_mapping(args.shards, "--shards"),
                        args.template, args.max_length, args.skip_bad, args.overwrite, overlong=args.overlong,
                        card_paths=cards)
    info = read_data_info(out)
    for line in summary_lines(info):
        print(line)
    per = ", ".join(f"{k}: {v['samples']}" for k, v in info["sources"].items())
    print(f"wrote {out}: {info['num_samples']} samples, {info['num_tokens']} tokens ({per}); template "
          f"{info['template']}" + (f"; {info['errors']} bad lines in {out}/errors.jsonl" if info["errors"] else ""))
    return 0
