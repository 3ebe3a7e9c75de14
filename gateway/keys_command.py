"""``zerogate keys``: a new CurveZMQ key pair for the hop between the gateway and its backends.

    zerogate keys                      # print the pair, as YAML lines with what goes where
    zerogate keys --out backend        # write backend.key (secret, mode 0600) and backend.pub

Without ``--out`` the secret key is printed once, on stdout, for the user to store (a file
only its owner reads, or an environment variable); nothing else ever prints one. With
``--out PREFIX`` it only goes to ``PREFIX.key``, a ZeroMQ certificate holding both halves
(created with mode 0600, never over an existing file unless ``--force``), and the public
half to ``PREFIX.pub``; stdout gets the public key. Both files are read by
``file:PATH`` references (``rpccore.load_key``), zmq.auth and czmq.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rpccore import curve_keypair
from rpccore._curve import certificate_text

PROG = "zerogate keys"
EXIT_FAILURE = 2
SECRET_MODE = 0o600  # read and written by its owner only
PUBLIC_MODE = 0o644


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate a CurveZMQ key pair (Z85 text) for the hop between the gateway "
        "and its backends. A backend's pair: its secret key is `zerogate rpc --server "
        "--curve-secret-key` (or rpccore's CurveServerKeys), its public key every client's "
        "curve server_key. The gateway's pair (needed when backends list authorized clients): "
        "its secret key is the service's curve secret_key, its public key goes into the "
        "backends' authorized clients.",
        epilog="Secret keys are referenced as file:PATH or env:NAME, never written in a config "
        "file or on a command line.",
    )
    parser.add_argument(
        "--out",
        metavar="PREFIX",
        type=Path,
        help="write PREFIX.key (the secret certificate, mode 0600) and PREFIX.pub (the public "
        "one) instead of printing the secret key",
    )
    parser.add_argument("--force", action="store_true", help="with --out: replace existing files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    public, secret = curve_keypair()
    if args.out is None:
        print(pair_text(public, secret), end="", flush=True)
        return 0
    try:
        secret_path, public_path = write_pair(args.out, public, secret, force=args.force)
    except OSError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    print(
        f"# secret key written to {secret_path} (mode 0600): reference it as "
        f"file:{secret_path}\n"
        f"# public key written to {public_path}:\n"
        f'public_key: "{public}"',
        flush=True,
    )
    return 0


def pair_text(public: str, secret: str) -> str:
    """The pair as YAML lines, each with a comment on where it goes. Z85 never holds a quote
    or a backslash, so double quotes are safe (and needed: Z85 holds '#', ':', '&'...)."""
    return (
        "# A new CurveZMQ key pair (zerogate keys).\n"
        "# public_key: give it to peers. A backend's goes in the gateway's services.NAME.curve."
        "server_key\n"
        "# (and `zerogate rpc --curve-server-key`); the gateway's goes in the backends' "
        "authorized clients.\n"
        f'public_key: "{public}"\n'
        "# secret_key: keep it private. Store it in a file only its owner can read, or in an\n"
        "# environment variable, and reference it as file:PATH or env:NAME (a backend's\n"
        "# --curve-secret-key, the gateway's services.NAME.curve.secret_key).\n"
        f'secret_key: "{secret}"\n'
    )


def write_pair(prefix: Path, public: str, secret: str, *, force: bool) -> tuple[Path, Path]:
    """Write PREFIX.key (mode 0600 from its creation: the secret is never readable by
    others, not even for a moment) and PREFIX.pub; return their paths."""
    secret_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    if not force:
        for path in (secret_path, public_path):
            if path.exists():
                raise FileExistsError(f"{path} exists (--force replaces it)")
    _write(secret_path, certificate_text(public, secret), SECRET_MODE)
    _write(public_path, certificate_text(public), PUBLIC_MODE)
    return secret_path, public_path


def _write(path: Path, text: str, mode: int) -> None:
    # Replacing means unlinking first: O_EXCL then creates a new file with our mode, where
    # opening the old one would keep its permissions.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


if __name__ == "__main__":
    sys.exit(main())
