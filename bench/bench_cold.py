"""Cold and warm query latency at 100k and 1M photos, this code beside a baseline checkout.

    .venv/bin/python -m bench.bench_cold                                  # 100k and 1M
    .venv/bin/python -m bench.bench_cold --sizes 100000 --runs 5 --baseline ../main

* **cold CLI text search**: ``clipsearch search TEXT -k 20`` in a fresh process, from its start
  to its exit with the results printed (wall clock), and its peak resident memory (the child's
  ``ru_maxrss``); with the model's export made (a first load ran while building the library);
* **cold image query**: ``clipsearch search --image PHOTO -k 20``, the same way;
* **cold status**: ``clipsearch status --json``, the same way;
* **warm queries** in one reader process (what the UI runs per search): text -> top 20 with
  records, p50 over ``--queries`` unique texts, and where the time goes (text encoder, FAISS
  search, records);
* **UI** (``--ui``): ``clipsearch ui`` started, a headless Chromium opens the page and
  searches: seconds from start to the page, from the first search to its results, and a
  warm search.

Every tree is byte-compiled first and its children may write bytecode (an installed package
has its ``.pyc`` files; ``PYTHONDONTWRITEBYTECODE`` in this workplace's environment would make
every cold run compile our modules again, ~0.15 s). Every variant runs ``--runs`` times, interleaved (this code, then the baseline, ...), so a noisy
spell of the machine hits both alike; tables give medians. The libraries are synthetic rows
written through the store API (bench/query_library.py), built once and cached; the model is a
random full-size ViT-B/32 (``bench.datasets.benchmark_weights``). ``--baseline DIR`` runs the
same commands with ``PYTHONPATH=DIR`` on a copy of the index whose FAISS file is in the format
that code reads.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .datasets import benchmark_weights, coco_photos
from .library_1m import compile_tree
from .query_library import baseline_copy, query_library

REPO = Path(__file__).resolve().parent.parent
TEXTS = ["kids on a beach at sunset", "a dog catching a frisbee", "snowy mountains",
         "birthday cake", "a red car in the rain", "people dancing at a wedding"]  # fmt: skip


def _env(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLIPSEARCH_") and k != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    if "CLIPSEARCH_CACHE_DIR" in os.environ:
        env["CLIPSEARCH_CACHE_DIR"] = os.environ["CLIPSEARCH_CACHE_DIR"]
    return dict(env, PYTHONPATH=os.fspath(tree))


def cold_rss(tree: Path, config: Path, args: list[str], command: str = "search") -> dict:
    """A fresh ``clipsearch COMMAND ARGS``: wall seconds from start to exit, CPU seconds,
    and the child's own peak RSS from ``wait4``."""
    cmd = [sys.executable, "-m", "indexer.cli", "--config", os.fspath(config), command, *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_env(tree), cwd=tree)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    cpu = usage.ru_utime + usage.ru_stime  # what the load of a busy machine does not inflate
    return {"s": wall, "cpu_s": cpu, "rss_mb": usage.ru_maxrss / 1024}


def warm(config: Path, n: int) -> dict:
    """In this process (a fresh one): warm text -> top-20 latency and its parts, in ms."""
    from indexer import Library, load_config  # noqa: I001 - runs alone, as a script

    try:  # as the UI does: a long-lived reader reads the vectors into memory
        from indexer.store import map_vector_files

        map_vector_files(False)
    except ImportError:  # code from before the FAISS file was memory-mapped
        pass
    with Library.open(load_config(config)) as lib:
        lib.search(TEXTS[0], k=20)  # load the model and the index
        enc, store = lib.encoder(), lib.store
        parts: dict[str, list[float]] = {"search": [], "encode": [], "faiss": [], "records": []}
        for i in range(n):
            text = f"{TEXTS[i % len(TEXTS)]} {i}"  # unique: no text cache hit
            t0 = time.perf_counter()
            res = lib.search(text, k=20)
            t1 = time.perf_counter()
            q = enc.encode_texts([text + " again"])[0]
            t2 = time.perf_counter()
            _, ids = store.search_vectors(q, 36)
            t3 = time.perf_counter()
            store.records(ids.tolist())
            t4 = time.perf_counter()
            assert len(res.hits) == 20
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[key].append(1000 * dt)
        out = {k: statistics.median(v) for k, v in parts.items()}
        out["encoder"] = type(enc).__name__
        out["kind"] = store.vector_state().kind
        return out


def ui(tree: Path, config: Path, port: int) -> dict:
    """``clipsearch ui`` and a headless Chromium: start -> page, first search, warm search."""
    from playwright.sync_api import sync_playwright

    cmd = [sys.executable, "-m", "indexer.cli", "--config", os.fspath(config), "ui", "--port",
           str(port)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(tree), cwd=tree, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])  # fmt: skip
            page = browser.new_page()
            page.set_default_timeout(180_000)
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(0.2)
            box = page.get_by_role("textbox", name="Search photos")
            box.wait_for()
            page.get_by_text("photos indexed").wait_for()
            up = time.perf_counter()
            times = []
            for text in TEXTS[:3]:
                t0 = time.perf_counter()
                box.fill(text)
                box.press("Enter")
                page.get_by_text("searched").wait_for()
                page.wait_for_function(
                    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                )
                times.append(time.perf_counter() - t0)
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    return {"page_s": up - start, "first_s": times[0], "warm_s": statistics.median(times[1:])}


def _warm_child(tree: Path, config: Path, queries: int) -> dict:
    """:func:`warm` in a fresh process running ``tree``'s code."""
    code = ("import json, statistics, sys, time\nfrom pathlib import Path\n"
            f"TEXTS = {TEXTS!r}\n" + inspect.getsource(warm) +
            "print(json.dumps(warm(Path(sys.argv[1]), int(sys.argv[2]))))")  # fmt: skip
    cmd = [sys.executable, "-c", code, os.fspath(config), str(queries)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(tree), cwd=tree)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--weights", help="checkpoint (default: a random ViT-B/32)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--queries", type=int, default=30, help="warm queries per variant")
    ap.add_argument("--baseline", help="another checkout, run as the variant 'baseline'")
    ap.add_argument("--ui", action="store_true", help="also time the UI in Chromium")
    ap.add_argument("--warm-rounds", type=int, default=3, help="warm processes per variant")
    ap.add_argument("--skip-cold", action="store_true", help="warm queries (and UI) only")
    ap.add_argument("--json")
    args = ap.parse_args()
    weights = benchmark_weights(args.weights)
    photo = os.fspath(coco_photos()[7])
    trees = {"this": REPO}
    if args.baseline:
        trees["baseline"] = Path(args.baseline).resolve()
    for tree in trees.values():
        compile_tree(tree)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        print(f"{n:,} photos:", flush=True)
        configs = {"this": query_library(n, weights)}
        if args.baseline:
            configs["baseline"] = baseline_copy(configs["this"])
        runs: dict[tuple, list[dict]] = {}
        for r in range(0 if args.skip_cold else args.runs):
            for name, tree in trees.items():
                for what, q in (("text", [TEXTS[r % len(TEXTS)], "-k", "20"]),
                                ("image", ["--image", photo, "-k", "20"]), ("status", ["--json"])):  # fmt: skip
                    m = cold_rss(tree, configs[name], q, "status" if what == "status" else "search")
                    runs.setdefault((name, what), []).append(m)
                    print(f"  {name} {what}: {m['s']:.2f} s (CPU {m['cpu_s']:.2f} s), "
                          f"{m['rss_mb']:.0f} MB", flush=True)  # fmt: skip
        warms: dict[str, list[dict]] = {}
        for _ in range(args.warm_rounds):  # interleaved too, in fresh processes
            for name, tree in trees.items():
                warms.setdefault(name, []).append(_warm_child(tree, configs[name], args.queries))
                print(f"  {name} warm: {warms[name][-1]}", flush=True)
        for name, tree in trees.items():
            row: dict = {"images": n, "variant": name}
            for what in ("text", "image", "status") if runs else ():
                ms = runs[(name, what)]
                row[f"{what}_s"] = statistics.median(m["s"] for m in ms)
                row[f"{what}_cpu_s"] = statistics.median(m["cpu_s"] for m in ms)
                row[f"{what}_rss_mb"] = statistics.median(m["rss_mb"] for m in ms)
                row[f"{what}_runs"] = [round(m["s"], 2) for m in ms]
            w = warms[name]
            row["warm"] = {k: statistics.median(x[k] for x in w) for k in w[0] if k not in
                           ("encoder", "kind")} | {"encoder": w[0]["encoder"], "kind": w[0]["kind"]}  # fmt: skip
            if args.ui:
                row["ui"] = ui(tree, configs[name], 8650 + len(rows))
            rows.append(row)
            print(f"  {row}", flush=True)
    _table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def _table(rows: list[dict]) -> None:
    print("| photos | variant | cold text p50 s (CPU s) | text peak RSS MB | cold image p50 s "
          "(CPU s) | cold status p50 s | warm query ms (encode / FAISS / records) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "text_s" not in r:
            r.update(text_s=0, text_cpu_s=0, text_rss_mb=0, image_s=0, image_cpu_s=0, status_s=0)
        w = r.get("warm")
        warm_s = (f"{w['search']:.1f} ({w['encode']:.1f} / {w['faiss']:.1f} / {w['records']:.1f}, "
                  f"{w['kind']})" if w else "")  # fmt: skip
        print(f"| {r['images']:,} | {r['variant']} | {r['text_s']:.2f} ({r['text_cpu_s']:.2f}) | "
              f"{r['text_rss_mb']:.0f} | {r['image_s']:.2f} ({r['image_cpu_s']:.2f}) | "
              f"{r.get('status_s', 0):.2f} | {warm_s} |")  # fmt: skip
        if r.get("ui"):
            u = r["ui"]
            print(f"|  | UI ({r['variant']}) | start to page {u['page_s']:.1f} s | first search "
                  f"{u['first_s']:.2f} s | warm search {u['warm_s']:.2f} s | |")  # fmt: skip


if __name__ == "__main__":
    main()
