"""Model latency, throughput and memory: the default model (fast), the lite model it is built
from, retrained candidates and MiniLM fp32 and INT8 when given.

    python bench/model_latency.py [--candidate DIR ...] [--minilm var/models/minilm]
        [--threads 1 2]

For each model and intra-op thread count, in a fresh process so that its memory is that of
a scorer holding that one model: the RSS before and after loading and its peak over the
run, the p50/p95 wall time of ``score_batch`` on one prompt at a time, and prompts/s in
batches of 64 and 256. Short prompts are the generated corpus's test split as it is (up to
about 500 characters); long prompts are consecutive corpus prompts joined into one of
exactly 4,096 characters, the most the scorer reads. Targets (seeds: retraining handoff):
p95 < 5 ms (ideally < 3 ms) for one prompt, memory < 2 GB. The default model's own targets,
printed after the table against what it measured: one short prompt p95 < 1 ms, one
4,096-char prompt p95 < 3 ms, and batched short prompts/s at least 20 times lite's in
batches of 256 (the scorer's default batch; batches of 64 are shown beside). Each batched
figure is the median of passes repeated for a second: one pass of the fast model takes a
few milliseconds, which a tick of another process moves by half.

The whole set of variants runs ``--rounds`` times (3), interleaved: this machine's speed
drifts by up to 2x between minutes, and a ratio of two rows measured minutes apart measured
the drift. The table shows each figure's median over the rounds (memory: the largest); the
speed-up is the median of each round's ratio, with their range.

Other work on the machine inflates every figure, so each row also says how many CPU cores
the rest of the machine kept busy while it was measured ("others' CPU"); on a 2-core machine
anything much above 0 means the row measured the contention as much as the model.

``--minilm DIR`` is a MiniLM model directory holding ``model.onnx`` (INT8) and
``model.fp32.onnx``; the fp32 graph is loaded through the same runtime, from a scratch
directory that presents it as ``model.onnx`` beside the same manifest and tokenizer.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import onnxruntime as ort
from pydantic import BaseModel, ConfigDict

from l2model.artifacts import default_lite_dir, default_model_dir
from l2model.contract import MODEL_FILE, TOKENIZER_FILE, VOCABULARY_FILE, Manifest
from l2model.corpus import DEFAULT_SIZE, generate_corpus, split_corpus
from l2model.eval_report import LatencyStats, batched_throughput, single_prompt_latency
from l2model.runtime import L2Model

# As l2model.minilm names it; importing that module would need torch.
FP32_FILE = "model.fp32.onnx"
LONG_CHARS = 4096
BATCH_SIZES = (64, 256)
MIB = 1024 * 1024
# The default model's targets: one prompt's p95 in ms, short and 4,096-char, and its batched
# short prompts/s over lite's.
SHORT_P95_MS = 1.0
LONG_P95_MS = 3.0
SPEEDUP = 20.0
SPEEDUP_BATCH = 256


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    model_dir: Path
    file_bytes: int  # the graph and the file its feed reads (vocabulary, tokenizer)

    @classmethod
    def of(cls, model_dir: Path, graph: Path | None = None, label: str | None = None) -> Variant:
        """``label`` defaults to the manifest's kind and version, ``graph`` to ``model.onnx``."""
        manifest = Manifest.read(model_dir)
        files = [graph or model_dir / MODEL_FILE] + [
            model_dir / name
            for name in (VOCABULARY_FILE, TOKENIZER_FILE)
            if (model_dir / name).is_file()
        ]
        return cls(
            label=label or f"{manifest.kind} {manifest.version}",
            model_dir=model_dir,
            file_bytes=sum(path.stat().st_size for path in files),
        )


class Prompts(BaseModel):
    model_config = ConfigDict(frozen=True)

    short_single: list[str]
    long_single: list[str]
    short_batched: list[str]
    long_batched: list[str]


class Figures(BaseModel):
    model_config = ConfigDict(frozen=True)

    variant: Variant
    threads: int
    others_cpu: float  # CPU cores the rest of the machine kept busy meanwhile, on average
    rss_before_mib: float
    rss_loaded_mib: float
    rss_peak_mib: float
    short: LatencyStats
    long: LatencyStats
    short_per_s: dict[int, float]
    long_per_s: dict[int, float]


def memory_mib(field: str) -> float:
    """A memory figure of this process from /proc (Linux): ``VmRSS`` is the resident set now,
    ``VmHWM`` its peak. Not getrusage's ru_maxrss: that survives exec, so a spawned child
    would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux)."""
    # Fields: user nice system idle iowait irq softirq steal; all but idle and iowait are busy.
    fields = [int(field) for field in Path("/proc/stat").read_text().split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def measure(variant: Variant, threads: int, prompts: Prompts) -> Figures:
    """Runs in a fresh process: see the module docstring."""
    started, machine, own = time.perf_counter(), busy_cpu_s(), own_cpu_s()
    before = memory_mib("VmRSS")
    model = L2Model.load(variant.model_dir, threads=threads)
    loaded = memory_mib("VmRSS")
    short = single_prompt_latency(model, prompts.short_single)
    long = single_prompt_latency(model, prompts.long_single)
    short_per_s = {b: batched_throughput(model, prompts.short_batched, b) for b in BATCH_SIZES}
    long_per_s = {b: batched_throughput(model, prompts.long_batched, b) for b in BATCH_SIZES}
    others = (busy_cpu_s() - machine) - (own_cpu_s() - own)
    return Figures(
        variant=variant,
        threads=threads,
        others_cpu=round(max(0.0, others) / (time.perf_counter() - started), 2),
        rss_before_mib=round(before, 1),
        rss_loaded_mib=round(loaded, 1),
        rss_peak_mib=round(memory_mib("VmHWM"), 1),
        short=short,
        long=long,
        short_per_s=short_per_s,
        long_per_s=long_per_s,
    )


def long_prompts(texts: Sequence[str], count: int) -> list[str]:
    """``count`` prompts of exactly ``LONG_CHARS`` characters, each made of consecutive
    texts joined by blank lines, as when a user pastes several documents at once."""
    source = itertools.cycle(texts)
    joined = []
    for _ in range(count):
        parts = [next(source)]
        while sum(len(part) + 2 for part in parts) < LONG_CHARS:
            parts.append(next(source))
        joined.append("\n\n".join(parts)[:LONG_CHARS])
    return joined


def build_prompts(seed: int, single: int, long_single: int, batched: int) -> Prompts:
    texts = [record.text for record in split_corpus(generate_corpus(DEFAULT_SIZE, seed)).test]
    rng = random.Random(seed)
    rng.shuffle(texts)
    longs = long_prompts(texts, max(long_single, max(BATCH_SIZES)))
    return Prompts(
        short_single=texts[:single],
        long_single=longs[:long_single],
        short_batched=(texts * (batched // len(texts) + 1))[:batched],
        long_batched=longs,
    )


@contextmanager
def minilm_variants(minilm: Path) -> Iterator[list[Variant]]:
    """INT8 as the directory holds it; fp32 through a scratch directory of links."""
    with tempfile.TemporaryDirectory(prefix="minilm-fp32-") as scratch:
        fp32_dir = Path(scratch)
        for entry in minilm.iterdir():
            if entry.name not in (MODEL_FILE, FP32_FILE):
                (fp32_dir / entry.name).symlink_to(entry.resolve())
        (fp32_dir / MODEL_FILE).symlink_to((minilm / FP32_FILE).resolve())
        yield [
            Variant.of(fp32_dir, graph=minilm / FP32_FILE, label="MiniLM fp32"),
            Variant.of(minilm, label="MiniLM INT8"),
        ]


def markdown(rows: Sequence[Figures]) -> str:
    b_small, b_large = BATCH_SIZES
    header = (
        "| model | threads | files MiB | RSS loaded MiB (model) | RSS peak MiB "
        "| short p50 ms | short p95 ms | 4,096-char p50 ms | 4,096-char p95 ms "
        f"| short/s b{b_small} | short/s b{b_large} "
        f"| 4,096-char/s b{b_small} | 4,096-char/s b{b_large} | others' CPU |"
    )
    lines = [header, "|---|---:" + "|---:" * 12 + "|"]
    for f in rows:
        model_mib = f.rss_loaded_mib - f.rss_before_mib
        lines.append(
            f"| {f.variant.label} | {f.threads} | {f.variant.file_bytes / MIB:.1f} "
            f"| {f.rss_loaded_mib:,.0f} (+{model_mib:,.0f}) | {f.rss_peak_mib:,.0f} "
            f"| {f.short.p50_ms:.2f} | {f.short.p95_ms:.2f} "
            f"| {f.long.p50_ms:.2f} | {f.long.p95_ms:.2f} "
            f"| {f.short_per_s[b_small]:,.0f} | {f.short_per_s[b_large]:,.0f} "
            f"| {f.long_per_s[b_small]:,.0f} | {f.long_per_s[b_large]:,.0f} | {f.others_cpu:.2f} |"
        )
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def targets(measured: Sequence[Sequence[Figures]], default: Variant, lite: Variant) -> str:
    """The default model's p95s (medians over the rounds) and its batched short prompts/s
    over lite's (the median of each round's ratio, and their range), per thread count,
    against its targets."""
    rounds = [{(f.variant, f.threads): f for f in row} for row in measured]
    lines = [f"Targets of {default.label} (lite: {lite.label}), over {len(rounds)} round(s):"]
    for threads in sorted({f.threads for f in measured[0]}):
        ours = median_row([by[default, threads] for by in rounds])
        ratios = {
            b: [
                by[default, threads].short_per_s[b] / by[lite, threads].short_per_s[b]
                for by in rounds
            ]
            for b in BATCH_SIZES
        }
        speedup = statistics.median(ratios[SPEEDUP_BATCH])
        lines.append(
            f"- {threads} thread(s): short p95 {ours.short.p95_ms:.3f} ms "
            f"(< {SHORT_P95_MS:g}: {verdict(ours.short.p95_ms < SHORT_P95_MS)}), "
            f"4,096-char p95 {ours.long.p95_ms:.3f} ms "
            f"(< {LONG_P95_MS:g}: {verdict(ours.long.p95_ms < LONG_P95_MS)}), "
            f"batched short prompts/s over lite's in batches of {SPEEDUP_BATCH} "
            f"(>= {SPEEDUP:g}x): {speedup:.1f}x ({verdict(speedup >= SPEEDUP)}; rounds "
            f"{min(ratios[SPEEDUP_BATCH]):.1f}-{max(ratios[SPEEDUP_BATCH]):.1f}x); "
            + ", ".join(
                f"b{b} {statistics.median(r):.1f}x" for b, r in ratios.items() if b != SPEEDUP_BATCH
            )
        )
    return "\n".join(lines)


def run(
    variants: Sequence[Variant], threads: Sequence[int], prompts: Prompts, rounds: int
) -> list[list[Figures]]:
    """Each round measures every variant at every thread count once, in that order: a
    machine that slows down or speeds up between rounds moves both sides of a ratio."""
    spawn = multiprocessing.get_context("spawn")
    measured = []
    for _ in range(rounds):
        row = []
        for variant in variants:
            for count in threads:
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    row.append(pool.submit(measure, variant, count, prompts).result())
        measured.append(row)
    return measured


def _median_stats(stats: Sequence[LatencyStats]) -> LatencyStats:
    return LatencyStats(
        prompts=stats[0].prompts,
        p50_ms=statistics.median(s.p50_ms for s in stats),
        p95_ms=statistics.median(s.p95_ms for s in stats),
    )


def median_row(rounds: Sequence[Figures]) -> Figures:
    """One variant and thread count over the rounds: the median of each time and rate, the
    largest memory and the busiest machine."""
    return rounds[0].model_copy(
        update={
            "others_cpu": max(f.others_cpu for f in rounds),
            "rss_loaded_mib": max(f.rss_loaded_mib for f in rounds),
            "rss_peak_mib": max(f.rss_peak_mib for f in rounds),
            "short": _median_stats([f.short for f in rounds]),
            "long": _median_stats([f.long for f in rounds]),
            "short_per_s": {
                b: statistics.median(f.short_per_s[b] for f in rounds) for b in BATCH_SIZES
            },
            "long_per_s": {
                b: statistics.median(f.long_per_s[b] for f in rounds) for b in BATCH_SIZES
            },
        }
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_dir(), help="the default")
    parser.add_argument("--lite", type=Path, default=default_lite_dir(), help="its baseline")
    parser.add_argument("--minilm", type=Path, default=None, help="MiniLM model directory")
    parser.add_argument(
        "--candidate",
        type=Path,
        action="append",
        default=[],
        help="a retrained model directory (a registry version, say, with its memory) measured "
        "beside --model and --lite; repeatable",
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--single", type=int, default=200, help="short prompts timed alone")
    parser.add_argument("--long-single", type=int, default=50, help="long prompts timed alone")
    parser.add_argument("--batched", type=int, default=1024, help="short prompts per batch run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the table shows medians"
    )
    args = parser.parse_args(argv)

    prompts = build_prompts(args.seed, args.single, args.long_single, args.batched)
    default, lite = Variant.of(args.model), Variant.of(args.lite)
    candidates = [
        Variant.of(path, label=f"{Variant.of(path).label} ({path.name})") for path in args.candidate
    ]
    print(
        f"{platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} CPUs, "
        f"onnxruntime {ort.__version__}, load average {os.getloadavg()[0]:.2f} at the start; "
        f"{len(prompts.short_single)} short and {len(prompts.long_single)} long prompts timed "
        f"alone, {len(prompts.short_batched)} short and {len(prompts.long_batched)} long per "
        "batched run\n"
    )
    if args.minilm is None:
        measured = run([default, lite, *candidates], args.threads, prompts, args.rounds)
    else:
        with minilm_variants(args.minilm) as minilm:
            measured = run(
                [default, lite, *candidates, *minilm], args.threads, prompts, args.rounds
            )
    print(markdown([median_row(column) for column in zip(*measured, strict=True)]))
    print()
    print(targets(measured, default, lite))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
