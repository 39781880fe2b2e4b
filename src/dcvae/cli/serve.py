"""`dcvae serve CKPT`: the local web app (dcvae.serve) on 127.0.0.1 unless --host says otherwise."""
from __future__ import annotations

import argparse
import ipaddress
import logging

from ..errors import UserError

log = logging.getLogger("dcvae.cli")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the model once, bind, print the URL, serve until Ctrl-C."""
    try:
        from ..serve.app import build_state, make_server, server_url
    except ModuleNotFoundError as e:
        raise UserError(f"dcvae serve needs {e.name}: .venv/bin/pip install Flask") from None

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535 (0: any free port); got {args.port}")
    if not args.max_upload_mb > 0:
        raise UserError(f"--max-upload-mb must be positive; got {args.max_upload_mb}")
    if args.examples < 0:
        raise UserError(f"--examples must be 0 or more; got {args.examples}")
    state = build_state(args.checkpoint, args.direction, examples=args.examples,
                        max_upload_bytes=int(args.max_upload_mb * 2**20), decoder=args.decoder, device=args.device)
    server = make_server(state, args.host, args.port)
    if not _is_loopback(args.host):
        # the app has no authentication: anyone who can reach this address can use the model
        log.warning("listening on %s: reachable from other machines, without any authentication", args.host)
    print(f"dcvae serve: model {state.model.model_id[:12]} on {server_url(args.host, server.server_port)} "
          "(Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def add_parser(sub) -> None:
    """Register `dcvae serve` on the subparsers of the `dcvae` command."""
    from ..serve import DEFAULT_EXAMPLES, DEFAULT_HOST, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_PORT

    p = sub.add_parser("serve", help="local web app: reconstruct, interpolate, edit and sample in a browser")
    p.add_argument("checkpoint", help="run folder or checkpoint folder")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}, this machine only; another address makes "
                        "the unauthenticated app reachable from the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free port")
    p.add_argument("--direction", action="append", metavar="FILE",
                   help="an attribute direction from dcvae edit --save-direction: one slider (repeatable)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                   help=f"largest accepted upload in MB (default {DEFAULT_MAX_UPLOAD_BYTES // 2**20})")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help=f"example images from the model's test split (default {DEFAULT_EXAMPLES}; 0: none)")
    p.add_argument("--decoder", choices=("ema", "live"), default="ema", help="EMA (default) or live decoder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.set_defaults(func=cmd_serve)
