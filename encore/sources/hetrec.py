"""Reading HetRec 2011 Last.fm-2K files (tab-separated, header row) for the log replay.

``tags.dat`` is ISO-8859-1, not UTF-8; ``user_taggedartists.dat`` has some impossible tag dates
(years before Last.fm existed or after the dataset was published), which become ``None`` while
the tag itself is kept. The Spark adapter in ``jobs.ingest`` applies the same rules.
"""
from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from encore.errors import EncoreError

REQUIRED_FILES = ("user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat")
# Last.fm started in 2002; the dataset was published in 2011.
FIRST_VALID_YEAR, LAST_VALID_YEAR = 2002, 2011


def check_dir(path: str | Path) -> Path:
    root = Path(path)
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise EncoreError(f"{root} is not a HetRec Last.fm-2K folder (missing {', '.join(missing)}): "
                          "pass the folder holding user_artists.dat, e.g. ../shared/data/lastfm-hetrec2011")
    return root


def tag_date(day: str, month: str, year: str) -> dt.date | None:
    """The tagging date, or None when it is impossible (bad numbers, out of Last.fm's years)."""
    try:
        y, m, d = int(year), int(month), int(day)
        if not FIRST_VALID_YEAR <= y <= LAST_VALID_YEAR:
            return None
        return dt.date(y, m, d)
    except ValueError:
        return None


def _rows(path: Path, encoding: str = "utf-8"):
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)
        yield from reader


@dataclass
class HetRec:
    user_ids: np.ndarray      # per (user, artist) row
    artist_ids: np.ndarray
    weights: np.ndarray
    artist_names: dict[str, str]
    artist_tags: dict[str, list[dict]] = field(default_factory=dict)
    impossible_tag_dates: int = 0


def load(path: str | Path) -> HetRec:
    root = check_dir(path)
    users, artists, weights = [], [], []
    for row in _rows(root / "user_artists.dat"):
        if len(row) == 3:
            users.append(row[0]); artists.append(row[1]); weights.append(int(row[2]))
    names = {row[0]: row[1] for row in _rows(root / "artists.dat") if len(row) >= 2}
    tag_text = {row[0]: row[1].strip().lower() for row in _rows(root / "tags.dat", "iso-8859-1") if len(row) == 2}
    counts: dict[str, dict[str, list]] = defaultdict(dict)
    impossible = 0
    for row in _rows(root / "user_taggedartists.dat"):
        if len(row) != 6 or row[2] not in tag_text:
            continue
        when = tag_date(row[3], row[4], row[5])
        impossible += when is None
        entry = counts[row[1]].setdefault(tag_text[row[2]], [0, None])
        entry[0] += 1
        if when and (entry[1] is None or when < entry[1]):
            entry[1] = when
    tags = {
        artist: [{"tag": t, "count": c, "first_tagged": d.isoformat() if d else None}
                 for t, (c, d) in sorted(by_tag.items(), key=lambda kv: (-kv[1][0], kv[0]))]
        for artist, by_tag in counts.items()
    }
    return HetRec(np.array(users), np.array(artists), np.array(weights, dtype=np.int64), names, tags, impossible)
