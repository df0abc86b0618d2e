"""Serve the web chat demo (Gradio) for an exported model, on 127.0.0.1 by default.

Examples:
  anygpt serve --model out/model                      # http://127.0.0.1:7860
  anygpt serve --model out/model --port 8080 --max-upload-mb 5 --max-audio-seconds 20
  anygpt serve --model out/model --host 0.0.0.0       # reachable from other machines: think first

Uploads larger than --max-upload-mb or audio longer than --max-audio-seconds are refused with a
message on the page. Everything the server writes stays under --out (default: a new temp folder):
uploads (Gradio's cache) in OUT/uploads, generated media in OUT/sessions/<visitor>/turnNNN_MODALITY_K.png/.wav.
At most --max-concurrent generations run at once, each generate call stops after
--max-request-seconds, and uploads and idle conversations are removed after --max-age-seconds
or, oldest first, when OUT holds more than --max-store-mb.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from anygpt.inference.settings import PRESETS, default_preset

HELP = "web chat demo (Gradio) on 127.0.0.1 with upload limits"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model directory (a bundle)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="generation preset (default: reference for a released AnyGPT model or one made from it, else demo)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted, in MB (default 10)")
    p.add_argument("--max-audio-seconds", type=float, default=30.0, help="longest audio accepted (default 30)")
    p.add_argument("--max-concurrent", type=int, default=2, help="generations at once (default 2)")
    p.add_argument("--max-request-seconds", type=float, default=60.0,
                   help="each generate call of a turn stops after this long (default 60; 0 = no limit)")
    p.add_argument("--max-store-mb", type=float, default=512.0, help="uploads + outputs kept on disk (default 512)")
    p.add_argument("--max-age-seconds", type=float, default=3600.0,
                   help="uploads and idle conversations are removed after this long (default 3600)")
    p.add_argument("--out", default=None, help="root folder for uploads and generated media (default: a new temp folder)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.max_upload_mb <= 0 or args.max_audio_seconds <= 0:
        raise ValueError("--max-upload-mb and --max-audio-seconds must be positive")
    if args.max_concurrent < 1 or args.max_store_mb <= 0 or args.max_age_seconds <= 0 or args.max_request_seconds < 0:
        raise ValueError("--max-concurrent, --max-store-mb and --max-age-seconds must be positive")
    out_root = os.path.abspath(args.out or tempfile.mkdtemp(prefix="anygpt-serve-"))
    uploads = os.path.join(out_root, "uploads")
    os.makedirs(uploads, exist_ok=True)
    # Gradio reads its cache folder when it is imported: uploads then land under --out, not in /tmp/gradio
    os.environ["GRADIO_TEMP_DIR"] = uploads
    from anygpt.inference.web import ServeLimits, WebChat, build_app
    from anygpt.model.bundle import load_bundle

    bundle = load_bundle(args.model, device=args.device)
    limits = ServeLimits(args.max_upload_mb, args.max_audio_seconds, max_concurrent=args.max_concurrent,
                         max_request_seconds=args.max_request_seconds, max_store_mb=args.max_store_mb,
                         max_age_seconds=args.max_age_seconds)
    preset = args.preset or default_preset(bundle.template)
    web = WebChat(bundle, preset, out_root, limits, args.seed, upload_dir=uploads)
    web.start_janitor(every=min(30.0, args.max_age_seconds / 2))
    app = build_app(web)
    print(f"anygpt serve: http://{args.host}:{args.port}  (preset {preset}; outputs under {out_root})", flush=True)
    app.queue(default_concurrency_limit=args.max_concurrent).launch(
        server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=False,
        max_file_size=f"{int(args.max_upload_mb * 1024)}kb", allowed_paths=[out_root], quiet=True,
    )
    return 0
