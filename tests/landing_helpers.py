"""Helpers that write landing files the way a client would deliver them."""
from __future__ import annotations

import gzip
import json
from pathlib import Path


def event(event_id, user="u1", artist="a1", ts="2026-11-20T10:00:00Z", ms=200_000, **extra) -> str:
    record = {"event_id": event_id, "user_id": user, "artist_id": artist, "artist_name": f"Artist {artist}",
              "ts": ts, "ms_played": ms, "platform": "ios", "country": "se"}
    record.update(extra)
    return json.dumps({k: v for k, v in record.items() if v is not ...}, ensure_ascii=False)


def write_landing(landing: Path, day: str, lines: list[str], name: str = "part-00000.jsonl.gz") -> Path:
    folder = landing / "plays" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
