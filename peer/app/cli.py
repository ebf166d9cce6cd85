"""The ``peersm`` command (DESIGN §10): argument parsing and dispatch only.

Each command is a small function; the ones not built yet say so in one line and
exit with status 3, so scripts can tell "not built" from "failed" (1) and "bad
usage" (2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from peer import __version__

NOT_BUILT = 3


def _not_built(name: str, issue: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"peersm {name}: not built yet ({issue}).", file=sys.stderr)
        return NOT_BUILT

    return run


def _cmd_up(args: argparse.Namespace) -> int:
    from peer.app.up import cmd_up

    return cmd_up(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from peer.app.up import cmd_status

    return cmd_status(args)


def _cmd_ui(args: argparse.Namespace) -> int:
    from peer.app.up import cmd_ui

    return cmd_ui(args)


def _cmd_tor(args: argparse.Namespace) -> int:
    from peer.app.tor import cmd_tor

    return cmd_tor(args)


def _cmd_bridge(args: argparse.Namespace) -> int:
    import asyncio

    from peer.errors import UsageError
    from peer.roles.bridge import run_bridge

    try:
        return asyncio.run(run_bridge(args.listen, record=getattr(args, "test_record", None)))
    except UsageError as exc:
        print(f"peersm bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"peersm bridge: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _rate(text: str) -> int:
    """``--max-upload RATE``: a bad or zero rate is a usage error (exit 2)."""
    from peer.errors import UsageError
    from peer.roles.ratelimit import parse_rate

    try:
        return parse_rate(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_testnet(args: argparse.Namespace) -> int:
    import json

    from peer.app.testnet import NetSpec, launch_testnet, stop_testnet
    from peer.errors import PeerError

    if args.dir is None:
        print("peersm testnet: --dir is required", file=sys.stderr)
        return 2
    try:
        if args.action == "up":
            state = launch_testnet(
                NetSpec(
                    peers=args.peers,
                    dir=args.dir,
                    links=args.links,
                    exits=args.exits,
                    max_upload=args.max_upload,
                )
            )
            print(
                json.dumps(
                    {
                        "bridge": state["bridge"],
                        "peers": [{k: p[k] for k in ("name", "data_dir", "api")} for p in state["peers"]],
                    },
                    indent=1,
                )
            )
        else:
            n = stop_testnet(args.dir)
            print(f"stopped {n} processes", file=sys.stderr)
    except PeerError as exc:
        print(f"peersm testnet {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_share(args: argparse.Namespace) -> int:
    from peer.app.share import cmd_share

    return cmd_share(args)


def _cmd_get(args: argparse.Namespace) -> int:
    from peer.app.share import cmd_get

    return cmd_get(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from peer.app.demo import run_demo

    return run_demo(peers=args.peers, megabytes=args.megabytes, hops=args.hops)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="peersm",
        description=(
            "Anonymous peer-to-peer file sharing and streaming over Tor-protocol onion circuits. "
            "Every peer is an onion proxy, an onion router and an ORDB (rendezvous)."
        ),
        epilog="Data lives in --data (default: $XDG_DATA_HOME/peersm). Run 'peersm COMMAND --help' for details.",
    )
    p.add_argument("--version", action="version", version=f"peersm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(run=run)
        return sp

    up = add(
        "up",
        "run a peer (OP + OR + ORDB) that joins through bridges and keeps its links",
        _cmd_up,
    )
    up.add_argument("--data", type=Path, default=None, help="data directory")
    up.add_argument("--bridge", action="append", default=[], help="bridge WebSocket URL (repeatable)")
    up.add_argument(
        "--listen", help="this peer's address, ADDRESS[:UDP_PORT] (DHT and WebRTC; default 127.0.0.1)"
    )
    up.add_argument(
        "--tls",
        type=int,
        metavar="PORT",
        help="also accept TLS links on ADDRESS:PORT (for peers with a reachable address; 0 = any free port)",
    )
    up.add_argument("--links", type=int, default=8, help="links to keep, inbound and outbound (default 8)")
    up.add_argument(
        "--rotate-links",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="replace one random non-guard link about this often (default 600; 0 = never)",
    )
    up.add_argument("--ice-allow", help="addresses WebRTC may reveal and use (comma separated)")
    up.add_argument("--exit-policy", help="exit policy (default: no exit)")
    up.add_argument("--ui", help="web UI address, 127.0.0.1:PORT")
    up.add_argument("--socks", help="SOCKS5 listener, 127.0.0.1:PORT")
    up.add_argument("--stable", action="store_true", help="persist a stable identity (eligible as a guard)")
    up.add_argument(
        "--no-subnet-rule",
        action="store_true",
        help="allow two hops in one /16 (only for test networks on a single address)",
    )
    up.add_argument(
        "--max-upload",
        metavar="RATE",
        type=_rate,
        help="cap what this peer serves as a holder, bytes/s: 500K, 2M (K = 1024; default: no cap)",
    )
    up.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    up.add_argument("--test-corrupt-pieces", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--test-record", help=argparse.SUPPRESS)
    up.add_argument("--test-one-hop-ordb", action="store_true", help=argparse.SUPPRESS)

    demo = add("demo", "run a local network on this machine and move data through it anonymously", _cmd_demo)
    demo.add_argument("--peers", type=int, default=8, help="peers in the local network (default 8)")
    demo.add_argument("--megabytes", type=float, default=4.0, help="data to move (default 4 MB)")
    demo.add_argument("--hops", type=int, default=3, help="circuit length (default 3)")

    testnet = add("testnet", "start or stop a bridge and N peers as processes on loopback", _cmd_testnet)
    testnet.add_argument("action", choices=["up", "down"])
    testnet.add_argument("--peers", type=int, default=8, help="number of peers (default 8)")
    testnet.add_argument(
        "--dir", type=Path, required=False, help="directory for data dirs, logs, testnet.json"
    )
    testnet.add_argument("--links", type=int, default=3, help="links per peer (default 3)")
    testnet.add_argument("--exits", type=int, default=1, help="peers (the last ones) that exit to 127.0.0.1")
    testnet.add_argument(
        "--max-upload", metavar="RATE", type=_rate, help="every peer's upload cap as a holder (500K, 2M)"
    )

    share = add(
        "share",
        "share a file; prints its link as the last line",
        _cmd_share,
    )
    share.add_argument("file", type=Path)
    share.add_argument("--encrypt", action="store_true", help="encrypt; the key travels only in the link")
    share.add_argument("--data", type=Path, default=None)
    share.add_argument(
        "--no-seed", action="store_true", help="do not announce this file (opt out of seeding)"
    )

    get = add(
        "get",
        "download a link anonymously ('-' reads the link from standard input)",
        _cmd_get,
    )
    get.add_argument("link")
    get.add_argument("-o", "--output", type=Path, default=None)
    get.add_argument("--data", type=Path, default=None)

    status = add(
        "status",
        "show a running peer's links, circuits and transfers",
        _cmd_status,
    )
    status.add_argument("--data", type=Path, default=None)
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")

    ui = add("ui", "print a one-time login link to a running peer's web UI (or open it)", _cmd_ui)
    ui.add_argument("--data", type=Path, default=None)
    ui.add_argument("--open", action="store_true", help="open the link in the default browser")

    bridge = add(
        "bridge",
        "run a bridge: bootstrap and sealed WebRTC signalling over WebSocket",
        _cmd_bridge,
    )
    bridge.add_argument(
        "--listen", default="127.0.0.1:0", help="ADDRESS:PORT to listen on (loopback by default)"
    )
    bridge.add_argument("--test-record", help=argparse.SUPPRESS)

    add(
        "facilitator",
        "run an always-on peer that seeds, relays and bridges to BitTorrent",
        _not_built("facilitator", "facilitators"),
    )

    tor = add(
        "tor",
        "use our onion proxy on the Tor network (get URL, or a SOCKS5 proxy)",
        _cmd_tor,
    )
    tor.add_argument("action", choices=["get", "socks"])
    tor.add_argument("url", nargs="?")
    tor.add_argument("--authority", action="append", default=[], help="HOST:DIRPORT=V3IDENT (repeatable)")
    tor.add_argument("-o", "--output", type=Path, default=None)
    tor.add_argument("--hops", type=int, default=3)
    tor.add_argument("--listen", default="127.0.0.1:9050")
    tor.add_argument("--data", type=Path, default=None, help="data dir (guards, consensus cache)")
    tor.add_argument(
        "--allow-same-subnet",
        action="store_true",
        help="allow two relays of one /16 in a path (private test networks on 127.0.0.1 only)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover  (python -m peer.app.cli: used by the testnet)
    sys.exit(main())
