"""Benchmark of the onion core with no I/O (issue: onion core).

Prints circuits built per second and relay-cell throughput on one core, at a middle
hop (decrypt, check recognized, forward) and at the OP (all layers and the digest,
both directions), each set against raw AES-128-CTR + SHA-1 over the same bytes
measured in the same run.  ``--json`` prints one JSON object; ``--quick`` is short.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from benchmarks._pump import Mesh
from peer.proto.circuit import OriginCircuit, RelayCircuit
from peer.wire.commands import CellCommand, RelayCommand

CELL = 509


def reference_mb_s(ncells: int) -> float:
    """Raw AES-128-CTR + SHA-1 over ``ncells`` 509-byte payloads, one call each per cell."""
    payloads = [os.urandom(CELL) for _ in range(min(ncells, 4096))]
    aes = Cipher(algorithms.AES(os.urandom(16)), modes.CTR(bytes(16))).encryptor()
    sha = hashlib.sha1()
    t0 = time.perf_counter()
    for k in range(ncells):
        p = aes.update(payloads[k % len(payloads)])
        h = sha.copy()
        h.update(p)
        sha.update(p)
    dt = time.perf_counter() - t0
    return ncells * CELL / dt / 1e6


def circuits_per_second(seconds: float) -> float:
    mesh = Mesh(4)
    op = mesh.nodes[0].node
    path = [mesh.nodes[k].hop for k in (1, 2, 3)]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        h = op.build_circuit(mesh.chan[(0, 1)], path)
        mesh.pump()
        assert isinstance(op.circuits[h], OriginCircuit) and len(op.circuits[h].hops) == 3  # type: ignore[union-attr]
        op.destroy_circuit(h)
        mesh.pump()
        n += 1
    return n / (time.perf_counter() - t0)


def relay_throughput(ncells: int) -> dict[str, float]:
    """MB/s of relay payload at a middle hop and at the OP (3-hop circuit)."""
    mesh = Mesh(4)
    op = mesh.nodes[0].node
    h = op.build_circuit(mesh.chan[(0, 1)], [mesh.nodes[k].hop for k in (1, 2, 3)])
    mesh.pump()
    circ = op.circuits[h]
    assert isinstance(circ, OriginCircuit)
    chunk = os.urandom(498)
    # OP forward: seal for hop 3, three AES layers, padding; cells queued on the channel
    t0 = time.perf_counter()
    for _ in range(ncells):
        op.send_relay(h, RelayCommand.DROP, 0, chunk)
    msgs = op.pop_messages(mesh.chan[(0, 1)], 31 * 514)
    op_fwd = ncells * CELL / (time.perf_counter() - t0) / 1e6
    # middle hop: the cells arrive at node 1 (decrypt, recognized check fails, forward)
    mid = mesh.nodes[1].node
    in_chan = mesh.chan[(1, 0)]
    out_chan = mesh.chan[(1, 2)]
    t0 = time.perf_counter()
    for m in msgs:
        mid.channel_receive(in_chan, m, 0.0)
    out = mid.pop_messages(out_chan, 31 * 514)
    middle = ncells * CELL / (time.perf_counter() - t0) / 1e6
    assert sum(len(m) for m in out) == ncells * 514
    # OP backward: cells originated at hop 3, peeled by all three layers and recognised
    exit_node = mesh.nodes[3].node
    xh = next(k for k, c in exit_node.circuits.items() if isinstance(c, RelayCircuit))
    for _ in range(ncells):
        exit_node.send_relay(xh, RelayCommand.DROP, 0, chunk)
    mesh_msgs = exit_node.pop_messages(mesh.chan[(3, 2)], 31 * 514)
    for m in mesh_msgs:
        mesh.nodes[2].node.channel_receive(mesh.chan[(2, 3)], m, 0.0)
    for m in mesh.nodes[2].node.pop_messages(mesh.chan[(2, 1)], 31 * 514):
        mid.channel_receive(mesh.chan[(1, 2)], m, 0.0)
    back = mid.pop_messages(mesh.chan[(1, 0)], 31 * 514)
    t0 = time.perf_counter()
    for m in back:
        op.channel_receive(mesh.chan[(0, 1)], m, 0.0)
    op_back = ncells * CELL / (time.perf_counter() - t0) / 1e6
    assert h in op.circuits and all(m[4] == CellCommand.RELAY for m in back[:1])
    return {"middle_mb_s": middle, "op_forward_mb_s": op_fwd, "op_backward_mb_s": op_back}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a short run (CI)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    ncells = 20_000 if args.quick else 200_000
    ref = reference_mb_s(ncells)
    rel = relay_throughput(ncells)
    cps = circuits_per_second(1.0 if args.quick else 5.0)
    result = {
        "cells": ncells,
        "circuits_per_s_3hop": round(cps, 1),
        "reference_aes_ctr_sha1_mb_s": round(ref, 1),
        **{k: round(v, 1) for k, v in rel.items()},
        **{k.replace("_mb_s", "_ratio"): round(v / ref, 3) for k, v in rel.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"3-hop circuits built per second (ntor x3, no I/O): {result['circuits_per_s_3hop']}")
        print(
            f"reference: raw AES-128-CTR + SHA-1 per 509-byte cell: {result['reference_aes_ctr_sha1_mb_s']} MB/s"
        )
        for k, v in rel.items():
            print(f"{k.replace('_mb_s', ''):>18}: {v:8.1f} MB/s   ratio to reference {v / ref:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
