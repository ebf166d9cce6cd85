"""`peersm status` in words: links (and which peers use us as their guard), what we share, what
we index as an ORDB, and why a share is not announced yet."""

from __future__ import annotations

from peer.app.up import format_status


def test_status_lines_say_what_is_shared_and_why_not_yet() -> None:
    st = {
        "node_id": "ab" * 20,
        "stable": True,
        "uptime_s": 12.0,
        "known_peers": 7,
        "bridges": 1,
        "links": [
            {
                "peer": "cd" * 8,
                "transport": "tls",
                "guard": True,
                "kept": False,
                "initiator": True,
                "age_s": 3,
            },
            {
                "peer": "ef" * 8,
                "transport": "webrtc",
                "guard": False,
                "kept": True,
                "initiator": False,
                "age_s": 9,
            },
        ],
        "circuits": 2,
        "relayed_circuits": 5,
        "announce": {
            "circuits": 1,
            "announced": 2,
            "pending": 1,
            "retries": 3,
            "last_error": "no eligible ORDB",
        },
        "ordb": {"hash_names": 4, "queries": 10, "answered": 8, "forwarded": 1, "unavailable": 1},
        "recent_link_drops": ["the peer rotates its links"],
    }
    lines = format_status(st)
    assert lines[0].startswith("node " + "ab" * 8 + "…  stable")
    assert "guard out" in lines[2] and "we-are-its-guard in" in lines[3]
    assert (
        "sharing: 2 announced through 1 circuits to ORDBs, 1 still trying (last problem: no eligible ORDB)"
        in lines
    )
    assert "as an ORDB: 4 hash_names indexed, 10 queries, 8 answered, 1 forwarded, 1 unavailable" in lines
    assert lines[-1] == "  dropped: the peer rotates its links"
    quiet = format_status({"announce": {"announced": 1, "circuits": 3, "pending": 0}})
    assert "sharing: 1 announced through 3 circuits to ORDBs" in quiet
