"""Seeded raw play-log generator: writes ``landing/plays/date=D/*.jsonl.gz`` and
``landing/catalog/date=D/catalog.jsonl.gz`` as clients and the catalogue service would deliver them.

Sources:
  * ``synthetic``: artists with Zipf popularity and tags, users with tastes over the tags,
    listening sessions of consecutive plays, skips.
  * ``hetrec``: replays HetRec Last.fm-2K so that each (user, artist)'s number of events is
    proportional to its play count (``scale`` x weight, stochastically rounded), spread over
    ``days`` days as per-user listening sessions; artist tags come from its tag files.

Both inject a share ``fault_rate`` of faults (see ``FAULTS``) plus ``bots`` bot-like users, and
both follow the habits of real scrobble logs, which are not faults and which clean must keep:
  * album runs: a play continues the previous one's album (same artist, the next track); in the
    HetRec replay, where each (user, artist)'s count is fixed, a user's plays of one artist in a
    day are played in one run instead;
  * shared seconds: a play of another track is stamped with the second of the play before it
    (offline scrobbles submitted in a batch, one track ending in the second the next one starts);
  * double scrobbles (``double_scrobbles``, a share of plays): a track logged at its start and again
    at its end, under two event ids;
  * Windows files: every third file of a date (the first among them) starts with a byte-order
    mark and ends its lines with CRLF.
HetRec names artists, not tracks: its replayed plays get the tracks of a generated discography.
The output depends only on the seed and the arguments; a rerun of a date replaces its files.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encore.errors import EncoreError

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
EPOCH = dt.date(1970, 1, 1)
PLATFORMS = np.array(["ios", "android", "web", "desktop", "speaker"])
PLATFORM_P = np.array([0.34, 0.36, 0.12, 0.13, 0.05])
COUNTRIES = np.array(["US", "GB", "DE", "FR", "BR", "JP", "SE", "MX", "PL", "IN", "ES", "CA"])
TAGS = ["rock", "pop", "indie", "electronic", "hip-hop", "jazz", "metal", "folk", "classical",
        "alternative", "punk", "soul", "r&b", "country", "blues", "reggae", "ambient", "techno",
        "house", "k-pop", "j-pop", "latin", "singer-songwriter", "post-rock", "shoegaze",
        "dream pop", "trip-hop", "funk", "disco", "grunge", "emo", "hardcore", "drum and bass",
        "dubstep", "soundtrack", "world", "celtic", "baroque", "chanson", "bossa nova"]
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sa", "lu", "ne", "dor", "fi", "qua", "zel",
             "mo", "ri", "an", "ex", "ul", "ta", "bre", "sø", "ñu", "ça", "ko", "ji"]
# Fault kinds and their relative frequency within fault_rate.
FAULTS = {
    "duplicate_delivery": 3,    # the same line delivered twice
    "retry_new_id": 1,          # the same play re-sent with a fresh event id (same user/item/second)
    "truncated_line": 2,        # a line cut off mid-JSON
    "missing_event_id": 1,
    "missing_user_id": 1,
    "missing_item": 1,         # neither artist_id nor artist_name
    "non_numeric_ms_played": 1,          # neither artist_id nor artist_name
    "negative_ms_played": 1,
    "absurd_ms_played": 1,
    "future_timestamp": 1,
    "ancient_timestamp": 1,     # before 2000 (epoch 0 and friends)
    "unparseable_timestamp": 1,
    "extra_fields": 2,          # unknown fields: valid, must be kept
    "invalid_utf8": 1,          # the artist's name written in Latin-1 by an old client
    "wrong_type_id": 1,         # an id as a JSON array, object or boolean (a client's serialiser bug)
    "oversized_line": 1,        # a 2 KB payload field: over clean.max_line_bytes only where that is set
                                # below it (tests); kept at the default 1 MiB
}


@dataclass
class World:
    """Users, artists and tracks every day of a generation run draws from."""

    artist_ids: np.ndarray
    artist_name_json: list[str]     # JSON-escaped names, quotes included
    artist_tags: list[list[dict]]
    track_ids: np.ndarray           # [artist, k]
    track_name_json: list[list[str]]
    track_ms: np.ndarray            # [artist, k]
    user_ids: np.ndarray
    user_country: np.ndarray


def _name(rng: np.random.Generator, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES, size=parts)).capitalize()


def _uuid_strings(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.bytes(16 * n).hex()
    ids = [raw[i:i + 32] for i in range(0, 32 * n, 32)]
    return np.array([f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in ids])


def _tracks(rng: np.random.Generator, n_artists: int, per_artist: int = 8):
    track_ids = _uuid_strings(rng, n_artists * per_artist).reshape(n_artists, per_artist)
    names = [[json.dumps(_name(rng, 2) + " " + _name(rng, 1)) for _ in range(per_artist)] for _ in range(n_artists)]
    track_ms = rng.integers(120_000, 420_000, size=(n_artists, per_artist))
    return track_ids, names, track_ms


# --- play sampling -------------------------------------------------------------------------------

@dataclass
class Plays:
    user: np.ndarray      # index into world.user_ids
    artist: np.ndarray    # index into world.artist_ids
    track: np.ndarray     # index into the artist's tracks, -1 for none
    ts_ms: np.ndarray     # epoch millis
    ms_played: np.ndarray


def _run_start(first: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row of its run (runs begin where ``first`` is true; row 0
    always begins one)."""
    return np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))


def _lay_out_sessions(rng, user: np.ndarray, ms_played: np.ndarray, day_start_ms: int) -> np.ndarray:
    """Timestamps for plays sorted by user: each user listens in sessions of consecutive plays."""
    n = len(user)
    ts = np.empty(n, dtype=np.int64)
    if n == 0:
        return ts
    new_user = np.r_[True, user[1:] != user[:-1]]
    new_session = new_user | (rng.random(n) < 1 / 12)
    gap = np.where(new_session, rng.integers(5 * 60_000, 90 * 60_000, n), rng.integers(0, 3_000, n))
    step = np.r_[0, ms_played[:-1]] + gap
    step[new_user] = 0
    cum = np.cumsum(step)
    start_idx = _run_start(new_user)
    offset = cum - cum[start_idx]
    # Spread each user's first session over the day, keeping the whole day's listening inside it.
    # A user with more than a day of plays (HetRec's heaviest listeners replayed into a few days)
    # gets the sessions squeezed into the day: overlapping plays that the bot rule then catches.
    last = np.r_[np.flatnonzero(new_user)[1:] - 1, n - 1]
    span = offset[last]
    user_of_row = np.cumsum(new_user) - 1
    squeeze = np.minimum(1.0, (DAY_MS - 1) / np.maximum(span, 1))
    offset = (offset * squeeze[user_of_row]).astype(np.int64)
    room = np.maximum(DAY_MS - 1 - np.minimum(span, DAY_MS - 1), 1)
    first = (rng.random(len(room)) * room).astype(np.int64)
    ts[:] = day_start_ms + first[user_of_row] + offset
    return ts


NOT_UTF8_FAULTS = {"invalid_utf8"}

# Shares of the scrobble habits (see the module docstring).
ALBUM_RUN_SHARE = 0.3
# Files of a date written as a Windows client writes them (a byte-order mark, CRLF): every third,
# from the first (so a small date's only file is one).
WINDOWS_EVERY = 3
SHARED_SECOND_SHARE = 0.03


def _album_runs(rng, user: np.ndarray, artist: np.ndarray, track: np.ndarray, tracks_per_artist: int):
    """Plays sorted by user, where a share continue the previous play's album: (artist, track)."""
    n = len(user)
    if n == 0:
        return artist, track
    continues = np.r_[False, user[1:] == user[:-1]] & (rng.random(n) < ALBUM_RUN_SHARE)
    start = _run_start(~continues)
    return artist[start], (track[start] + np.arange(n) - start) % tracks_per_artist


def _artist_runs(rng, user: np.ndarray, artist: np.ndarray, tracks_per_artist: int):
    """Plays sorted by user, reordered so each user's plays of one artist are consecutive (counts
    unchanged), with consecutive tracks from a random first one: (order, track)."""
    n = len(user)
    order = np.lexsort((rng.random(n), rng.permutation(int(artist.max()) + 1 if n else 1)[artist], user))
    user, artist = user[order], artist[order]
    first = np.r_[True, (user[1:] != user[:-1]) | (artist[1:] != artist[:-1])] if n else np.empty(0, bool)
    start = _run_start(first)
    offset = rng.integers(0, tracks_per_artist, n)
    return order, (offset[start] + np.arange(n) - start) % tracks_per_artist


def _shared_seconds(rng, user: np.ndarray, artist: np.ndarray, track: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Laid-out times where a share of plays take the second of the play before them, when that is
    another track (the same track twice in one second is a re-sent play, which clean rejects)."""
    n = len(user)
    if n == 0:
        return ts
    other = (user[1:] == user[:-1]) & ((artist[1:] != artist[:-1]) | (track[1:] != track[:-1]))
    shares = np.r_[False, other] & (rng.random(n) < SHARED_SECOND_SHARE)
    shares &= ~np.r_[False, shares[:-1]]          # pairs, not chains
    stamped = shares | np.r_[shares[1:], False]
    second = np.where(shares, ts[np.maximum(np.arange(n) - 1, 0)], ts) // 1000 * 1000
    return np.where(stamped, second, ts)


def _double_scrobbles(rng, plays: "Plays", share: float, day_start_ms: int) -> "Plays":
    """A share of plays logged again at their end (inside the day), as another play."""
    again = (rng.random(len(plays.user)) < share) & (plays.ts_ms + plays.ms_played < day_start_ms + DAY_MS)
    end = Plays(plays.user[again], plays.artist[again], plays.track[again],
                plays.ts_ms[again] + plays.ms_played[again], plays.ms_played[again])
    return _concat(plays, end)


def _ms_played(rng, world: World, artist: np.ndarray, track: np.ndarray) -> np.ndarray:
    full = world.track_ms[artist, np.maximum(track, 0)]
    skip = rng.random(len(artist)) < 0.22
    return np.where(skip, rng.integers(1_000, 30_000, len(artist)),
                    (full * rng.uniform(0.85, 1.0, len(artist))).astype(np.int64))


def _bot_plays(rng, world: World, bots: int, day_start_ms: int) -> Plays:
    # Bots: a few ids that stream 1,200+ tiny plays a day around the clock.
    if bots <= 0:
        return Plays(*(np.empty(0, dtype=np.int64) for _ in range(5)))
    per_bot = 1_200 + rng.integers(0, 400, bots)
    user = np.repeat(np.arange(bots), per_bot)  # bots are the first user indices
    n = len(user)
    artist = rng.integers(0, len(world.artist_ids), n)
    track = rng.integers(0, world.track_ids.shape[1], n)
    ms = rng.integers(30_000, 32_000, n)
    ts = day_start_ms + np.sort(rng.integers(0, DAY_MS, n))
    return Plays(user, artist, track, ts, ms)


# --- serialisation and faults --------------------------------------------------------------------

def _iso(ts_ms: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms"), "Z")


def _render(rng, world: World, plays: Plays, day_start_ms: int, fault_rate: float, utf8_only: bool) -> list[str]:
    """JSON lines for the plays, in delivery order, with faults injected (``utf8_only``: none of
    the kinds whose line is not UTF-8)."""
    n = len(plays.user)
    event_ids = _uuid_strings(rng, n)
    iso = _iso(plays.ts_ms)
    ts_kind = rng.random(n)  # 75% ISO in UTC, 15% epoch millis, 10% ISO with an offset
    platforms = rng.choice(PLATFORMS, size=n, p=PLATFORM_P)
    kinds = [k for k in FAULTS if not (utf8_only and k in NOT_UTF8_FAULTS)]
    weights = np.array([FAULTS[k] for k in kinds], dtype=float)
    fault = np.where(rng.random(n) < fault_rate, rng.choice(len(kinds), size=n, p=weights / weights.sum()), -1)
    lines: list[str] = []
    append = lines.append
    for i in range(n):
        a, t, u = plays.artist[i], plays.track[i], plays.user[i]
        kind = kinds[fault[i]] if fault[i] >= 0 else None
        ts_ms = int(plays.ts_ms[i])
        ms = int(plays.ms_played[i])
        if ts_kind[i] < 0.75:
            ts = f'"{iso[i]}"'
        elif ts_kind[i] < 0.9:
            ts = str(ts_ms)
        else:
            local = np.datetime64(ts_ms + 3_600_000, "ms")
            ts = f'"{np.datetime_as_string(local, unit="ms")}+01:00"'
        user = f'"{world.user_ids[u]}"'
        artist = f'"artist_id":"{world.artist_ids[a]}","artist_name":{world.artist_name_json[a]}'
        extra = ""
        event_id = f'"{event_ids[i]}"'
        if kind == "missing_event_id":
            event_id = "null"
        elif kind == "non_numeric_ms_played":
            ms = f'"{ms // 1000}s"'
        elif kind == "missing_user_id":
            user = "null" if rng.random() < 0.5 else '""'
        elif kind == "missing_item":
            artist = '"artist_id":null'
        elif kind == "negative_ms_played":
            ms = -int(rng.integers(1, 100_000))
        elif kind == "absurd_ms_played":
            ms = int(rng.integers(20_000_000, 4_000_000_000))
        elif kind == "future_timestamp":
            ts = f'"{_iso(np.array([ts_ms + int(rng.integers(3, 400)) * DAY_MS]))[0]}"'
        elif kind == "ancient_timestamp":
            ts = "0" if rng.random() < 0.5 else '"1999-12-31T23:59:59.000Z"'
        elif kind == "unparseable_timestamp":
            ts = '"20/11/2026 25:61"'
        elif kind == "extra_fields":
            extra = f',"client_version":"{int(rng.integers(1, 9))}.{int(rng.integers(0, 20))}","ab_bucket":"b{int(rng.integers(0, 4))}"'
        elif kind == "wrong_type_id":
            if i % 3 == 0:
                user = f'[{user}]'
            elif i % 3 == 1:
                event_id = f'{{"id":{event_id}}}'
            else:
                artist = f'"artist_id":true,"artist_name":{world.artist_name_json[a]}'
        elif kind == "invalid_utf8":   # \udce9 is written as the lone byte 0xE9 (Latin-1 'é'): surrogateescape
            artist = f'"artist_id":"{world.artist_ids[a]}","artist_name":"Beyonc\udce9"'
        elif kind == "oversized_line":
            extra = f',"payload":"{"x" * 2000}"'
        track = ""
        if t >= 0:
            track = f',"track_id":"{world.track_ids[a, t]}","track_name":{world.track_name_json[a][t]}'
        line = (f'{{"event_id":{event_id},"user_id":{user},{artist}{track},"ts":{ts},'
                f'"ms_played":{ms},"platform":"{platforms[i]}","country":"{world.user_country[u]}"{extra}}}')
        if kind == "truncated_line":
            line = line[: int(rng.integers(5, len(line) - 2))]
        append(line)
        if kind == "duplicate_delivery":
            append(line)
        elif kind == "retry_new_id":
            append(line.replace(event_ids[i], _uuid_strings(rng, 1)[0], 1))
    # Deliveries arrive out of order.
    order = rng.permutation(len(lines))
    return [lines[j] for j in order]


def _write_gz(path: Path, lines: list[str], windows: bool = False) -> None:
    """A gzip JSON-lines file; ``windows``: as a Windows tool writes it, a byte-order mark first and
    CRLF line ends (both read past by clean). Lone surrogates are written as the bytes they stand for."""
    end = "\r\n" if windows else "\n"
    with gzip.open(path, "wt", encoding="utf-8", errors="surrogateescape", compresslevel=3, newline="") as handle:
        handle.write(("\ufeff" if windows else "") + end.join(lines))
        handle.write(end)


def _replace_dir(target: Path, staging: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


# --- worlds ----------------------------------------------------------------------------------------

def synthetic_world(seed: int, users: int, items: int) -> World:
    rng = np.random.default_rng([seed, 0])
    artist_ids = _uuid_strings(rng, items)
    names = [json.dumps(_name(rng, int(rng.integers(1, 4))) + ("" if rng.random() < 0.6 else " " + _name(rng, 2)))
             for _ in range(items)]
    tag_pop = 1 / np.arange(1, len(TAGS) + 1) ** 0.8
    tag_pop /= tag_pop.sum()
    artist_tags = []
    for _ in range(items):
        k = int(rng.integers(1, 5))
        chosen = rng.choice(len(TAGS), size=k, replace=False, p=tag_pop)
        counts = np.sort(rng.integers(1, 200, size=k))[::-1]
        artist_tags.append([{"tag": TAGS[c], "count": int(n), "first_tagged": None} for c, n in zip(chosen, counts)])
    track_ids, track_names, track_ms = _tracks(rng, items)
    user_ids = np.array([f"u{seed % 1000:03d}{i:07d}" for i in range(users)])
    country = rng.choice(COUNTRIES, size=users)
    return World(artist_ids, names, artist_tags, track_ids, track_names, track_ms, user_ids, country)


class SyntheticSampler:
    """Per-user tastes over tags; artists drawn by tag, then by Zipf popularity."""

    def __init__(self, world: World, seed: int):
        rng = np.random.default_rng([seed, 1])
        n_items, n_users = len(world.artist_ids), len(world.user_ids)
        self.world = world
        pop = 1 / np.arange(1, n_items + 1) ** 1.05
        self.popularity = pop[rng.permutation(n_items)]
        primary = np.array([TAGS.index(tags[0]["tag"]) for tags in world.artist_tags])
        self.tag_artists = [np.flatnonzero(primary == t) for t in range(len(TAGS))]
        self.tag_cdf = [np.cumsum(self.popularity[a]) / self.popularity[a].sum() if len(a) else None
                        for a in self.tag_artists]
        tag_mass = np.array([len(a) > 0 for a in self.tag_artists], dtype=float)
        taste = rng.dirichlet(np.full(len(TAGS), 0.15), size=n_users) * tag_mass
        taste += 1e-9 * tag_mass
        self.taste_cdf = np.cumsum(taste / taste.sum(axis=1, keepdims=True), axis=1)
        # Heavy-tailed but human: the most active users play about 4x the median.
        self.activity = np.minimum(rng.lognormal(0, 0.6, n_users), 4.0)

    def sample(self, rng, n: int, day_start_ms: int, bots: int) -> Plays:
        world = self.world
        p = self.activity.copy()
        p[:bots] = 0  # bot ids only stream bot traffic
        user = np.sort(rng.choice(len(p), size=n, p=p / p.sum()))
        tag = (self.taste_cdf[user] < rng.random((n, 1))).sum(axis=1)
        tag = np.minimum(tag, len(TAGS) - 1)
        artist = np.empty(n, dtype=np.int64)
        for t in np.unique(tag):
            rows = np.flatnonzero(tag == t)
            cdf = self.tag_cdf[t]
            if cdf is None:
                artist[rows] = rng.integers(0, len(world.artist_ids), len(rows))
            else:
                artist[rows] = self.tag_artists[t][np.searchsorted(cdf, rng.random(len(rows)))]
        track = rng.integers(0, world.track_ids.shape[1], n)
        artist, track = _album_runs(rng, user, artist, track, world.track_ids.shape[1])
        ms = _ms_played(rng, world, artist, track)
        ts = _shared_seconds(rng, user, artist, track, _lay_out_sessions(rng, user, ms, day_start_ms))
        return Plays(user, artist, track, ts, ms)


def hetrec_world(hetrec_dir: str, seed: int, bots: int):
    from encore.sources import hetrec
    data = hetrec.load(hetrec_dir)
    rng = np.random.default_rng([seed, 2])
    artist_ids, artist_idx = np.unique(data.artist_ids, return_inverse=True)
    users, user_idx = np.unique(data.user_ids, return_inverse=True)
    names = [json.dumps(data.artist_names.get(a, f"artist {a}")) for a in artist_ids]
    tags = [data.artist_tags.get(a, []) for a in artist_ids]
    track_ids, track_names, track_ms = _tracks(rng, len(artist_ids))
    bot_ids = np.array([f"bot{seed}-{i}" for i in range(bots)])
    user_ids = np.r_[bot_ids, users]
    country = rng.choice(COUNTRIES, size=len(user_ids))
    world = World(artist_ids.astype(str), names, tags, track_ids, track_names, track_ms, user_ids.astype(str), country)
    log.info("HetRec: %d users, %d artists, %d plays, %d impossible tag dates ignored",
             len(users), len(artist_ids), int(data.weights.sum()), data.impossible_tag_dates)
    return world, user_idx + bots, artist_idx, data.weights


# --- drivers ---------------------------------------------------------------------------------------

def _day_start_ms(day: dt.date) -> int:
    return (day - EPOCH).days * DAY_MS


def _write_catalog(landing: Path, day: dt.date, world: World) -> None:
    lines = [json.dumps({"artist_id": str(a), "name": json.loads(n), "tags": t}, ensure_ascii=False)
             for a, n, t in zip(world.artist_ids, world.artist_name_json, world.artist_tags)]
    target = landing / "catalog" / f"date={day.isoformat()}"
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _write_gz(staging / "catalog.jsonl.gz", lines)
    _replace_dir(target, staging)


def _render_file(args) -> tuple[str, int]:
    world, plays, day_start_ms, fault_rate, seed_key, path, windows, plain = args
    rng = np.random.default_rng(seed_key)
    lines = _render(rng, world, plays, day_start_ms, fault_rate, utf8_only=plain)
    _write_gz(Path(path), lines, windows and not plain)
    return path, len(lines)


def _split(plays: Plays, parts: int) -> list[Plays]:
    chunks = np.array_split(np.arange(len(plays.user)), parts)
    return [Plays(*(getattr(plays, f)[c] for f in ("user", "artist", "track", "ts_ms", "ms_played"))) for c in chunks]


def _concat(a: Plays, b: Plays) -> Plays:
    return Plays(*(np.r_[getattr(a, f), getattr(b, f)] for f in ("user", "artist", "track", "ts_ms", "ms_played")))


def _write_day(landing: Path, day: dt.date, world: World, plays: Plays, fault_rate: float, seed: int,
               events_per_file: int, pool, plain: bool = False) -> int:
    target = landing / "plays" / f"date={day.isoformat()}"
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    parts = max(1, -(-len(plays.user) // events_per_file))
    jobs = [(world, chunk, _day_start_ms(day), fault_rate, [seed, 3, day.toordinal(), k],
             str(staging / f"part-{k:05d}.jsonl.gz"), k % WINDOWS_EVERY == 0, plain)
            for k, chunk in enumerate(_split(plays, parts))]
    results = list(pool.map(_render_file, jobs)) if pool else [_render_file(j) for j in jobs]
    _replace_dir(target, staging)
    return sum(n for _, n in results)


def generate(landing_root: str, source: str, end_date: dt.date, days: int, seed: int,
             events_per_day: int = 20_000, users: int = 500, items: int = 2_000,
             fault_rate: float = 0.02, bots: int = 2, events_per_file: int = 250_000,
             hetrec_dir: str | None = None, scale: float = 0.01, workers: int | None = None,
             double_scrobbles: float = 0.01, plain: bool = False) -> dict:
    """Write ``days`` landing dates ending at ``end_date``; returns {date: lines written}.

    ``plain``: UTF-8 lines and LF endings only (no Windows files, no Latin-1 lines), for readers
    that refuse the rest, such as DuckDB's CSV reader in tests/benchmarks/bench_clean.py."""
    if days < 1:
        raise EncoreError("--days must be at least 1")
    if not 0 <= double_scrobbles < 1:
        raise EncoreError("generate.double_scrobbles must be in [0, 1)")
    if not 0 <= fault_rate < 1:
        raise EncoreError("--fault-rate must be in [0, 1)")
    landing = Path(landing_root)
    dates = [end_date - dt.timedelta(days=days - 1 - i) for i in range(days)]
    workers = workers or min(4, os.cpu_count() or 1)
    written: dict[str, int] = {}
    with ProcessPoolExecutor(workers) if workers > 1 else _NoPool() as pool:
        if source == "synthetic":
            world = synthetic_world(seed, users + bots, items)
            sampler = SyntheticSampler(world, seed)
            for day in dates:
                rng = np.random.default_rng([seed, 4, day.toordinal()])
                plays = _double_scrobbles(rng, sampler.sample(rng, events_per_day, _day_start_ms(day), bots),
                                          double_scrobbles, _day_start_ms(day))
                plays = _concat(plays, _bot_plays(rng, world, bots, _day_start_ms(day)))
                _write_catalog(landing, day, world)
                written[day.isoformat()] = _write_day(landing, day, world, plays, fault_rate, seed,
                                                      events_per_file, pool, plain)
                log.info("generated %s: %d lines", day, written[day.isoformat()])
        elif source == "hetrec":
            if not hetrec_dir:
                raise EncoreError("--source hetrec needs --hetrec-dir (e.g. ../shared/data/lastfm-hetrec2011)")
            if scale <= 0:
                raise EncoreError("--scale must be positive")
            world, pair_user, pair_artist, weights = hetrec_world(hetrec_dir, seed, bots)
            rng = np.random.default_rng([seed, 5])
            expected = weights * scale
            counts = np.floor(expected).astype(np.int64) + (rng.random(len(weights)) < expected % 1)
            pair = np.repeat(np.arange(len(weights), dtype=np.int32), counts)
            day_of = rng.integers(0, days, len(pair), dtype=np.int16)
            log.info("HetRec replay at scale %g: %d events over %d days", scale, len(pair), days)
            order = np.argsort(day_of, kind="stable")
            bounds = np.searchsorted(day_of[order], np.arange(days + 1))
            for k, day in enumerate(dates):
                day_rng = np.random.default_rng([seed, 6, day.toordinal()])
                idx = pair[order[bounds[k]:bounds[k + 1]]]
                idx = idx[day_rng.permutation(len(idx))]
                user = pair_user[idx]
                by_user = np.argsort(user, kind="stable")
                user, artist = user[by_user], pair_artist[idx][by_user]
                runs, track = _artist_runs(day_rng, user, artist, world.track_ids.shape[1])
                user, artist = user[runs], artist[runs]
                ms = _ms_played(day_rng, world, artist, track)
                ts = _shared_seconds(day_rng, user, artist, track, _lay_out_sessions(day_rng, user, ms, _day_start_ms(day)))
                plays = _double_scrobbles(day_rng, Plays(user, artist, track, ts, ms), double_scrobbles,
                                          _day_start_ms(day))
                plays = _concat(plays, _bot_plays(day_rng, world, bots, _day_start_ms(day)))
                _write_catalog(landing, day, world)
                written[day.isoformat()] = _write_day(landing, day, world, plays, fault_rate, seed,
                                                      events_per_file, pool, plain)
                log.info("generated %s: %d lines", day, written[day.isoformat()])
        else:
            raise EncoreError(f"unknown --source '{source}': use synthetic or hetrec")
    return written


class _NoPool:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def generate_from_config(cfg, **overrides) -> dict[str, int]:
    """``generate`` with the config's ``generate`` section, overridden by any non-None argument."""
    section = cfg.generate
    g = section.model_validate({**section.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    return generate(cfg.path("landing"), g.source, g.end_date, g.days, g.seed, events_per_day=g.events_per_day,
                    users=g.users, items=g.items, fault_rate=g.fault_rate, bots=g.bots,
                    events_per_file=g.events_per_file, hetrec_dir=g.hetrec_dir, scale=g.scale, workers=g.workers,
                    double_scrobbles=g.double_scrobbles)
