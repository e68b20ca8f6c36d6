"""Archive benchmark: auditor search at a month's scale, and what searches do to a live call's finals.

    python scripts/bench_archive.py --archive-url sqlite:///var/bench-100k.sqlite3 --segments 100000
    python scripts/bench_archive.py --archive-url sqlite:///var/bench-1m.sqlite3 --segments 1000000 --build-only

Builds (unless the file already holds that many segments) a synthetic month through the project's own
``Archive`` methods: 10 agents, ~50 final segments a call, calls spread over 30 days of working hours,
text recombined from the clauses of the labelled utterances (tests/data) and the dev calls' turns
(../shared/calls/dev, reference and ASR text), amounts and names varied; findings on ~4 % of segments
with the categories their sentences are labelled with, actions on about half of them.

Then prints, for each query kind, p50 / p95 / max over repeated searches for a page of 50; substring
recall against ``LIKE '%q%'``; and the add_segment latency of a simulated live call (one final a second
per speaker) alone, while 20 filtered searches run back to back, and while 20 are fired at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compliance_monitor.archive import archive_from_url  # noqa: E402
from compliance_monitor.archive.sqlite import Archive  # noqa: E402
from compliance_monitor.messages import (  # noqa: E402
    Action,
    ActionKind,
    CallStarted,
    Finding,
    NormalisedText,
    Severity,
    Speaker,
    Transcript,
)
from compliance_monitor.text.normalise import collapse_spaces, to_half_width, to_simplified  # noqa: E402
from compliance_monitor.text.tokenise import Tokenizer  # noqa: E402

SHARED = Path(os.environ.get("CM_SHARED_DIR", REPO.parent / "shared"))
UTTERANCES = [REPO / "tests" / "data" / "utterances_dev.jsonl", REPO / "tests" / "data" / "utterances_test.jsonl"]
DEV_CALLS = SHARED / "calls" / "dev" / "manifest.jsonl"
AGENTS = [f"agent-{i:02d}" for i in range(1, 11)]
MONTH_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
SEVERITY = {
    "threat": Severity.HIGH,
    "impersonation": Severity.CRITICAL,
    "privacy_leak": Severity.HIGH,
    "third_party_disclosure": Severity.HIGH,
    "abuse": Severity.WARN,
    "customer_abuse": Severity.INFO,
}
NAMES = ["王丽", "张伟", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰", "吴芳", "孙浩", "马丽"]
NO_MATCH = ["宇宙飞船", "企鹅乐队", "量子纠缠", "火星基地", "恐龙化石"]
_CLAUSE = re.compile(r"[^，。！？；,.!?;]+[，。！？；,.!?;]?")


# --------------------------------------------------------------------------- the synthetic month


@dataclass
class Clause:
    text: str  # normalised
    speaker: Speaker
    labels: tuple[str, ...]


@dataclass
class Corpus:
    clauses: dict[Speaker, list[Clause]] = field(default_factory=lambda: {s: [] for s in Speaker})

    def add(self, text: str, speaker: str, labels: list[str]) -> None:
        norm = collapse_spaces(to_half_width(to_simplified(text))).strip()
        for part in _CLAUSE.findall(norm):
            if len(part.strip()) >= 2:
                self.clauses[Speaker(speaker)].append(Clause(part.strip(), Speaker(speaker), tuple(labels)))


def load_corpus() -> Corpus:
    corpus = Corpus()
    for path in UTTERANCES:
        for line in path.read_text(encoding="utf-8").splitlines():
            u = json.loads(line)
            corpus.add(u["text"], u["speaker"], [x for x in u["labels"] if x in SEVERITY])
    if DEV_CALLS.exists():
        for line in DEV_CALLS.read_text(encoding="utf-8").splitlines():
            for turn in json.loads(line)["turns"]:
                labels = [x for x in turn.get("labels", []) if x in SEVERITY]
                corpus.add(turn["text"], turn["speaker"], labels)
                if turn.get("asr_text"):  # what the ASR really wrote: errors, traditional characters
                    corpus.add(turn["asr_text"], turn["speaker"], labels)
    return corpus


def vary(text: str, rng: random.Random) -> str:
    """Other amounts and names, so the month is not the same few hundred sentences."""
    text = re.sub(r"\d+", lambda m: str(rng.randint(1, 9) * 10 ** rng.randint(1, 4)), text)
    return re.sub("|".join(NAMES), lambda m: rng.choice(NAMES), text)


def utterance(corpus: Corpus, speaker: Speaker, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    parts = rng.sample(corpus.clauses[speaker], rng.choice((1, 1, 2, 2, 3)))
    labels = tuple(dict.fromkeys(x for p in parts for x in p.labels))
    return vary("".join(p.text for p in parts), rng), labels


@dataclass
class SimClock:
    now: float = MONTH_START

    def __call__(self) -> float:
        return self.now


def call_times(n_calls: int, rng: random.Random) -> list[tuple[float, str]]:
    """(start, agent) for each call: 30 days, 09:00–20:00, in time order."""
    starts = sorted(MONTH_START + rng.randrange(30) * DAY + rng.uniform(9, 20) * 3600 for _ in range(n_calls))
    return [(t, rng.choice(AGENTS)) for t in starts]


async def build_call(arc: Archive, corpus: Corpus, clock: SimClock, n: int, start: float, agent: str, seed: int) -> int:
    rng = random.Random(seed)
    call_id = f"bench-{n:06d}"
    clock.now = max(clock.now, start)
    await arc.start_call(CallStarted(call_id, agent, "pcm", (Speaker.AGENT, Speaker.CUSTOMER), {}, start))
    items, labels, t = [], [], 0.0
    for no in range(rng.randint(30, 70)):
        speaker = Speaker.AGENT if no % 2 == 0 or rng.random() < 0.3 else Speaker.CUSTOMER
        text, tags = utterance(corpus, speaker, rng)
        t0, t = t, t + 1.0 + len(text) * 0.22
        tr = Transcript(call_id, speaker, no, text, t0, t, True, avg_logprob=-0.25)
        items.append((tr, NormalisedText(text, text, text, ())))
        labels.append(tags)
    clock.now = max(clock.now, start + t)  # archived as the call goes: the month's clock moves with it
    ids = await arc.add_segments(items)
    findings = [
        (finding_for(tr, tags, rng), sid)
        for (tr, _), tags, sid in zip(items, labels, ids, strict=True)
        if rng.random() < (0.05 if tags else 0.017)  # ~70 % of utterances are labelled: ~4 % overall
    ]
    if findings:
        finding_ids = await arc.add_findings(findings)
        for (f, _), fid in zip(findings, finding_ids, strict=True):
            if rng.random() < 0.5:
                kind = ActionKind.HALT_CALL if f.severity == Severity.CRITICAL else ActionKind.WARN_COLLECTOR
                await arc.add_action(Action(call_id, kind, f, "bench"), fid)
    await arc.end_call(call_id, "hangup", start + t)
    return len(items)


def finding_for(tr: Transcript, tags: tuple[str, ...], rng: random.Random) -> Finding:
    category = rng.choice(tags) if tags else rng.choice(list(SEVERITY))
    span = (0, min(4, len(tr.text)))
    return Finding(
        tr.call_id, tr.speaker, tr.segment_no, f"{category}.bench", category, SEVERITY[category],
        tr.text[: span[1]], span, tr.t0, tr.t1, "bench finding",
    )  # fmt: skip


async def build(arc: Archive, clock: SimClock, corpus: Corpus, segments: int, seed: int) -> None:
    rng = random.Random(seed)
    calls = call_times(max(1, segments // 50), rng)
    done, t_start, n = await count_segments(arc), time.perf_counter(), 0
    while done < segments:
        batch = calls[n : n + 8] or [(calls[-1][0] + 60, rng.choice(AGENTS))]
        # several calls in flight at once, as on the live path: the archive group-commits their writes
        written = await asyncio.gather(
            *(build_call(arc, corpus, clock, n + i, s, a, seed * 1_000_003 + n + i) for i, (s, a) in enumerate(batch))
        )
        done, n = done + sum(written), n + len(batch)
        if n // 800 != (n - len(batch)) // 800:
            rate = done / (time.perf_counter() - t_start)
            print(f"  {done:,} segments, {n:,} calls, {rate:,.0f} segments/s", flush=True)
    print(f"built {done:,} segments in {time.perf_counter() - t_start:.0f} s", flush=True)


async def count_segments(arc: Archive) -> int:
    return await arc._read(lambda db: int(db.execute("SELECT count(*) FROM segments").fetchone()[0]))


# --------------------------------------------------------------------------- queries


@dataclass
class Workload:
    common: list[str]
    rare: list[str]
    phrases: list[str]
    categories: list[str]
    span: tuple[float, float]


def workload(corpus: Corpus, tokenizer: Tokenizer, rng: random.Random) -> Workload:
    clauses = [c for cs in corpus.clauses.values() for c in cs]
    words = Counter(w for c in clauses for w in set(tokenizer.cut(c.text)) if len(w) >= 2 and w.isalnum())
    common = [w for w, _ in words.most_common(12)]
    rare = rng.sample([w for w, k in words.items() if k == 1 and len(w) >= 2], 12)
    phrases = rng.sample([c.text.rstrip("，。！？；,.!?;") for c in clauses if 6 <= len(c.text) <= 12], 12)
    # the simulated month (live-call measurements append segments at today's date)
    return Workload(common, rare, phrases, sorted(SEVERITY), (MONTH_START, MONTH_START + 30 * DAY))


Query = dict[str, Any]


def query_kinds(w: Workload, rng: random.Random) -> dict[str, Callable[[], Query]]:
    def days(k: int) -> dict[str, float]:
        start = rng.uniform(w.span[0], max(w.span[0], w.span[1] - k * DAY))
        return {"since": start, "until": start + k * DAY}

    return {
        "common word": lambda: {"query": rng.choice(w.common)},
        "rare word": lambda: {"query": rng.choice(w.rare)},
        "phrase": lambda: {"query": rng.choice(w.phrases)},
        "one character": lambda: {"query": rng.choice("还钱您法告")},
        "category only": lambda: {"query": None, "category": rng.choice(w.categories)},
        "word + category": lambda: {"query": rng.choice(w.common + w.rare), "category": rng.choice(w.categories)},
        "word + agent": lambda: {"query": rng.choice(w.common + w.rare), "agent": rng.choice(AGENTS)},
        "word + date range (1-3 days)": lambda: {"query": rng.choice(w.common + w.rare), **days(rng.randint(1, 3))},
        "combined (word+agent+speaker+7 days+severity)": lambda: {
            "query": rng.choice(w.common),
            "agent": rng.choice(AGENTS),
            "speaker": "agent",
            "severity": "high",
            **days(7),
        },
        "combined (word+agent+speaker+7 days)": lambda: {
            "query": rng.choice(w.common),
            "agent": rng.choice(AGENTS),
            "speaker": rng.choice(["agent", "customer"]),
            **days(7),
        },
        "word + action": lambda: {"query": rng.choice(w.common), "action": rng.choice(["halt_call", "warn_collector"])},
        "no match": lambda: {"query": rng.choice(NO_MATCH)},
        "common word, next page (cursor)": lambda: {"query": rng.choice(w.common), "pages": 2},
    }


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def bench_queries(arc: Archive, kinds: dict[str, Callable[[], Query]], repeats: int) -> list[tuple[str, ...]]:
    rows = []
    for name, make in kinds.items():
        times, sizes = [], []
        for _ in range(repeats):
            q = make()
            t = time.perf_counter()
            sizes.append(await run_query_page(arc, q))
            times.append(time.perf_counter() - t)
        ms = [x * 1000 for x in times]
        rows.append(
            (name, f"{pct(ms, 50):.1f}", f"{pct(ms, 95):.1f}", f"{max(ms):.1f}", f"{statistics.mean(sizes):.0f}")
        )
    return rows


async def run_query_page(arc: Archive, q: Query) -> int:
    """One search as the API makes it (page of 50); ``pages`` > 1 follows next_cursor."""
    q = dict(q)
    pages, text, cursor = q.pop("pages", 1), q.pop("query"), None
    n = 0
    for _ in range(pages):
        page = await arc.search_page(text, limit=50, cursor=cursor, **q)
        n, cursor = len(page.results), page.next_cursor
        if cursor is None:
            break
    return n


# --------------------------------------------------------------------------- recall


async def recall(arc: Archive, queries: list[str]) -> list[tuple[str, int, int, int]]:
    """(query, LIKE matches, search phrase matches, missed) for each query; search pages through cursors."""
    out = []
    for q in queries:
        like = await arc._read(
            lambda db, q=q: {
                r[0]
                for r in db.execute(
                    "SELECT segment_id FROM segments WHERE text LIKE ? ESCAPE '\\'",
                    ("%" + re.sub(r"([%_\\])", r"\\\1", q) + "%",),
                )
            }
        )
        found: set[int] = set()
        page = await arc.search_page(q, limit=5000)
        while True:
            found |= {r["segment_id"] for r in page.results if r["match"] == "phrase"}
            if page.next_cursor is None or page.results[-1]["match"] != "phrase":
                break
            page = await arc.search_page(q, limit=5000, cursor=page.next_cursor)
        out.append((q, len(like), len(found & like), len(like - found)))
        if found - like:
            raise AssertionError(f"{q}: {len(found - like)} phrase results that do not contain it")
    return out


# --------------------------------------------------------------------------- other reads


async def other_reads(arc: Archive, rng: random.Random) -> list[tuple[str, ...]]:
    """The call view and evidence export's reads (the export verifies the whole chain)."""
    calls = [f"bench-{rng.randrange(100):06d}" for _ in range(10)]
    rows = []
    for name, make in (
        ("call list (50)", lambda _: arc.list_calls("all", 50)),
        ("one call (get_call)", arc.get_call),
        ("one call's audit entries", arc.audit_entries),
    ):
        ms = [await timed(lambda c=c, make=make: make(c)) * 1000 for c in calls]
        rows.append((name, f"{pct(ms, 50):.1f}", f"{pct(ms, 95):.1f}", f"{max(ms):.1f}"))
    t = time.perf_counter()
    intact, n = await arc.verify_chain()
    rows.append(
        (f"verify the whole chain ({n:,} entries, intact={intact})", "", "", f"{(time.perf_counter() - t) * 1000:.0f}")
    )
    return rows


# --------------------------------------------------------------------------- live writes under searches


async def live_writes(arc: Archive, seconds: float, label: str) -> list[float]:
    """A live call: each speaker says something every ~1 s; the latency of each final's add_segment."""
    call_id = f"live-{label}-{time.time():.0f}"
    await arc.start_call(CallStarted(call_id, "agent-01", "pcm", (Speaker.AGENT, Speaker.CUSTOMER), {}, time.time()))
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def speaker(who: Speaker, offset: float) -> None:
        await asyncio.sleep(offset)
        no = 0 if who == Speaker.AGENT else 1
        while time.perf_counter() < stop:
            text = "请您今天下午五点前还款，否则我们会按流程处理。"
            tr = Transcript(call_id, who, no, text, no * 1.0, no * 1.0 + 0.9, True)
            latencies.append(
                await timed(lambda tr=tr, text=text: arc.add_segment(tr, NormalisedText(text, text, text, ())))
            )
            no += 2
            await asyncio.sleep(1.0)

    await asyncio.gather(speaker(Speaker.AGENT, 0.0), speaker(Speaker.CUSTOMER, 0.5))
    await arc.end_call(call_id, "hangup", time.time())
    return latencies


async def searches_while(arc: Archive, make: Callable[[], Query], stop: asyncio.Event, at_once: bool) -> int:
    n = 0
    while not stop.is_set():
        if at_once:
            await asyncio.gather(*(run_query_page(arc, make()) for _ in range(20)))
        else:
            for _ in range(20):
                await run_query_page(arc, make())
        n += 20
    return n


async def bench_live(arc: Archive, w: Workload, rng: random.Random, seconds: float) -> list[tuple[str, ...]]:
    kinds = query_kinds(w, rng)
    filtered = [kinds["word + category"], kinds["word + agent"], kinds["word + date range (1-3 days)"]]

    def make() -> Query:
        return rng.choice(filtered)()

    rows = []
    for label, at_once in (("no searches", None), ("20 filtered searches back to back", False),
                           ("20 filtered searches at once", True)):  # fmt: skip
        stop = asyncio.Event()
        searching = asyncio.create_task(searches_while(arc, make, stop, at_once)) if at_once is not None else None
        lat = await live_writes(arc, seconds, label.split()[0])
        stop.set()
        n = await searching if searching else 0
        ms = [x * 1000 for x in lat]
        rows.append((label, f"{pct(ms, 50):.1f}", f"{pct(ms, 95):.1f}", f"{max(ms):.1f}", str(len(ms)), str(n)))
    return rows


# --------------------------------------------------------------------------- report


def sizes(path: Path) -> str:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    groups: Counter[str] = Counter()
    for name, size in rows:
        table = "segments_grams (FTS5)" if name.startswith("segments_grams") else name
        groups[table] += size
    top = ", ".join(f"{n} {s / 1e6:.0f}" for n, s in groups.most_common(8))
    return f"file {path.stat().st_size / 1e6:.0f} MB; MB by table/index: {top}"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive-url", required=True, help="sqlite:///path (relative) or sqlite:////abs/path")
    ap.add_argument("--segments", type=int, required=True)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--repeats", type=int, default=40, help="searches per query kind")
    ap.add_argument("--live-seconds", type=float, default=20.0, help="length of each live-call measurement")
    ap.add_argument("--seed", type=int, default=21)
    args = ap.parse_args()

    tokenizer = Tokenizer(REPO / "rules" / "user_dict.txt")
    clock = SimClock()
    arc = archive_from_url(args.archive_url, tokenizer.cut_for_search, clock=clock)
    t = time.perf_counter()
    await arc.open()
    print(f"opened {arc.path} in {time.perf_counter() - t:.1f} s", flush=True)
    corpus = load_corpus()
    try:
        await build(arc, clock, corpus, args.segments, args.seed)
        print(sizes(arc.path))
        if args.build_only:
            return
        clock.now = time.time()  # the live call and anything after the month: real time
        rng = random.Random(args.seed + 1)
        w = workload(corpus, tokenizer, rng)
        n = await count_segments(arc)
        print(f"\n### {n:,} segments — search, page of 50 ({args.repeats} searches per kind, ms)\n")
        rows = await bench_queries(arc, query_kinds(w, rng), args.repeats)
        print(table(("query kind", "p50", "p95", "max", "results"), rows), flush=True)
        checks = [*w.common[:6], *w.rare[:6], *w.phrases[:4], "起诉", "还", "法院", "家人", "我们会联系你的家人"]
        rec = await recall(arc, checks)
        like, hit = sum(r[1] for r in rec), sum(r[2] for r in rec)
        print(f"\nrecall vs LIKE '%q%': {hit:,}/{like:,} = {hit / max(like, 1):.2%} over {len(rec)} queries")
        print(table(("query", "LIKE", "found", "missed"), [(q, str(a), str(b), str(c)) for q, a, b, c in rec]))
        print("\n### other reads (ms)\n")
        print(table(("read", "p50", "p95", "max"), await other_reads(arc, rng)), flush=True)
        print(f"\n### live call's add_segment latency (ms), {args.live_seconds:.0f} s each\n", flush=True)
        live = await bench_live(arc, w, rng, args.live_seconds)
        print(table(("while", "p50", "p95", "max", "finals", "searches"), live))
    finally:
        await arc.aclose()


if __name__ == "__main__":
    asyncio.run(main())
