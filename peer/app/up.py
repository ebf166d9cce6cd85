"""``peersm up`` (run a peer) and ``peersm status`` (ask a running one), DESIGN §10."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from peer.app.apiclient import ApiClient
from peer.errors import PeerError, UsageError
from peer.proto.exitpolicy import ExitPolicy
from webui.server import ApiServer, remove_api_json, write_api_json

log = logging.getLogger("peersm")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aioice logs local addresses at INFO: keep addresses out of INFO logs (DESIGN §10)
    for noisy in ("aioice", "aiortc", "aiohttp.access", "kademlia", "rpcudp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_hostport(text: str, *, default_port: int = 0, loopback_only: bool = False) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        p = int(port)
    except ValueError:
        raise UsageError(f"{text!r} is not ADDRESS:PORT with a numeric address") from None
    if not 0 <= p <= 65535:
        raise UsageError(f"bad port in {text!r}")
    if loopback_only and not ip.is_loopback:
        raise UsageError(f"{text!r}: only loopback addresses (127.0.0.0/8, ::1) are allowed here")
    return str(ip), p


async def _run_up(args: argparse.Namespace, data_dir: Path) -> int:
    from peer.node import Peer, PeerConfig

    host, port = parse_hostport(args.listen or "127.0.0.1:0")
    if args.tls is not None and not 0 <= args.tls <= 65535:
        raise UsageError(f"--tls {args.tls}: a port is 0-65535")
    if args.rotate_links < 0:
        raise UsageError("--rotate-links is a number of seconds, 0 or more")
    config = PeerConfig(
        data_dir=data_dir,
        host=host,
        dht_port=port,
        bridges=list(args.bridge),
        max_links=args.links,
        tls_port=args.tls,
        rotate_every=args.rotate_links,
        stable=args.stable,
        exit_policy=ExitPolicy.parse(args.exit_policy) if args.exit_policy else ExitPolicy.reject_all(),
        ice_allow=tuple(a.strip() for a in args.ice_allow.split(",")) if args.ice_allow else None,
        socks=parse_hostport(args.socks, loopback_only=True) if args.socks else None,
        subnet_rule=not args.no_subnet_rule,
        corrupt_pieces=bool(getattr(args, "test_corrupt_pieces", False)),
        record_path=Path(args.test_record) if getattr(args, "test_record", None) else None,
        one_hop_ordb=bool(getattr(args, "test_one_hop_ordb", False)),
        max_upload=getattr(args, "max_upload", None),  # bytes/s, parsed by the CLI (None: no cap)
    )
    ui_host, ui_port = parse_hostport(args.ui, loopback_only=True) if args.ui else ("127.0.0.1", 0)
    peer = await Peer.start(config)
    api = ApiServer()
    api.set_status_provider(peer.status)
    from webui.pages import add_pages
    from webui.routes import add_routes
    from webui.stream import add_stream_routes

    add_routes(api, peer)
    add_pages(api)
    add_stream_routes(api, peer)
    url = await api.start(ui_host, ui_port)
    write_api_json(data_dir, url, api.token)
    print(
        json.dumps(
            {
                "node_id": peer.keys.node_id.hex(),
                "api": url,
                "socks": f"{peer.socks.address[0]}:{peer.socks.address[1]}" if peer.socks else None,
            }
        ),
        flush=True,
    )
    print_ui_link(api)
    log.info(
        "peer up (%s identity); API and status: peersm status --data %s; web UI: peersm ui --data %s",
        "stable" if config.stable else "ephemeral",
        data_dir,
        data_dir,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    remove_api_json(data_dir)
    await api.stop()
    await peer.stop()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from peer.app.paths import default_data_dir

    setup_logging(getattr(args, "verbose", False))
    data_dir = args.data or default_data_dir()
    try:
        return asyncio.run(_run_up(args, data_dir))
    except PeerError as exc:
        print(f"peersm up: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"peersm up: {exc.strerror or exc}", file=sys.stderr)
        return 1


def print_ui_link(api: ApiServer, out: TextIO | None = None) -> bool:
    """Print a one-time web UI login link when ``out`` (stdout) is a terminal; never into a pipe or file.

    ``peersm up``'s output may be captured into a log (the testnet does), and a login link
    must not stay in one.  Returns whether it printed.
    """
    out = sys.stdout if out is None else out
    if not out.isatty():
        return False
    print(f"web UI: {api.login_url()}", file=out)
    print("  (this link works once, for 2 minutes; `peersm ui` prints a new one)", file=out, flush=True)
    return True


def cmd_ui(args: argparse.Namespace) -> int:
    """``peersm ui``: ask the running peer for a one-time login link; print it, or open it (``--open``)."""
    from peer.app.paths import default_data_dir

    data_dir = args.data or default_data_dir()
    try:
        client = ApiClient.from_data_dir(data_dir)
        url = client.post("/api/ui/code", {}).get("url")
    except PeerError as exc:
        print(f"peersm ui: {exc}", file=sys.stderr)
        return 1
    if not isinstance(url, str) or not url.startswith(f"{client.url}/ui/login?code="):
        print(f"peersm ui: the peer at {client.url} sent no usable login link", file=sys.stderr)
        return 1
    if getattr(args, "open", False):
        import webbrowser

        if webbrowser.open(url):
            print("peersm ui: opened the web UI in your browser", file=sys.stderr)
            return 0
        print("peersm ui: no browser could be opened; open this link yourself:", file=sys.stderr)
    print(url, flush=True)
    print("(this link works once, for 2 minutes)", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from peer.app.paths import default_data_dir

    data_dir = args.data or default_data_dir()
    try:
        st = ApiClient.from_data_dir(data_dir).get("/api/status")
    except PeerError as exc:
        print(f"peersm status: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(st, indent=2))
        return 0
    print("\n".join(format_status(st)))
    return 0


def format_status(st: dict[str, Any]) -> list[str]:
    """The lines `peersm status` prints (no addresses, no keys: node ids are cut to 16 hex digits)."""
    out = [
        f"node {str(st.get('node_id', '?'))[:16]}…  {'stable' if st.get('stable') else 'ephemeral'}  "
        f"up {st.get('uptime_s')} s  known peers {st.get('known_peers')}  bridges {st.get('bridges')}"
    ]
    links = st.get("links") or []
    out.append(f"links: {len(links)}")
    for ln in links:
        out.append(
            f"  {ln['peer']}…  {ln.get('transport', 'webrtc')}  {'guard ' if ln['guard'] else ''}"
            f"{'we-are-its-guard ' if ln.get('kept') else ''}"
            f"{'out' if ln['initiator'] else 'in'}  age {ln['age_s']} s"
        )
    out.append(f"circuits: {st.get('circuits')} built here, {st.get('relayed_circuits')} relayed")
    a = st.get("announce") or {}
    line = f"sharing: {a.get('announced', 0)} announced through {a.get('circuits', 0)} circuits to ORDBs"
    if a.get("pending"):
        line += f", {a['pending']} still trying"
        if a.get("last_error"):
            line += f" (last problem: {a['last_error']})"
    out.append(line)
    o = st.get("ordb") or {}
    out.append(
        f"as an ORDB: {o.get('hash_names', 0)} hash_names indexed, {o.get('queries', 0)} queries, "
        f"{o.get('answered', 0)} answered, {o.get('forwarded', 0)} forwarded, "
        f"{o.get('unavailable', 0)} unavailable"
    )
    if st.get("socks"):
        out.append(f"socks: {st['socks']}")
    out.extend(f"  refused: {r}" for r in st.get("recent_link_refusals") or [])
    out.extend(f"  dropped: {r}" for r in st.get("recent_link_drops") or [])
    return out
