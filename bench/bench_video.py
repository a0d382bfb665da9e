"""Sampling frames from videos: full decoding against keyframes only.

    .venv/bin/python -m bench.bench_video                    # 60 s of 1280x720 at 30 fps
    .venv/bin/python -m bench.bench_video --seconds 120 --repeats 5 --json video.json
    .venv/bin/python -m bench.bench_video --index 4   # + `clipsearch index` of 4 such videos

The videos are real files made once (under .bench/) by tests/videos.py: coco-mini photos as
scenes (5 s each), H.264 (libx264) in .mp4 and VP9 (libvpx-vp9) in .webm, yuv420p, a keyframe
every ``--gop`` frames (30: one a second, as phones record). Each variant runs the indexer's own
indexer.embed.video.decode_video with its default limits (a frame at least every 2 s and at
each scene change, 448 px on the longest side), decoding every frame or only the keyframes
(``keyframes_only``). The table gives the median seconds per video, the frames sampled and the
realtime factor (video seconds decoded per second). ``--index N`` then runs the real
`clipsearch index` (a random ViT-B/32, the default backend) on N different H.264 videos and
reports its seconds per video beside the decoding alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from indexer.embed.video import VideoLimits, decode_video

from .datasets import CACHE, coco_photos

CODECS = {"H.264": ("libx264", ".mp4"), "VP9": ("libvpx-vp9", ".webm")}


def make_videos(seconds: int, size: tuple[int, int], fps: int, gop: int) -> dict[str, Path]:
    """The benchmark videos, one per codec (reused from earlier runs)."""
    from PIL import Image

    from tests.videos import make_video

    n = max(1, round(seconds / 5))
    photos = []
    for src in coco_photos(n):
        with Image.open(src) as img:
            photos.append(img.convert("RGB"))
    out_dir = CACHE / f"video-{size[0]}x{size[1]}-{fps}fps-{seconds}s-gop{gop}"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (codec, ext) in CODECS.items():
        dst = out_dir / f"scenes{ext}"
        if not dst.exists():
            print(f"encoding {dst} ...", file=sys.stderr, flush=True)
            tmp = dst.with_name(f"tmp-{dst.name}")
            make_video(tmp, photos, seconds_each=seconds / n, fps=fps, codec=codec,
                       size=size, gop=gop)  # fmt: skip
            os.replace(tmp, dst)
        out[name] = dst
    return out


def bench_index(n: int, seconds: int, size: tuple[int, int], fps: int, gop: int) -> dict:
    """`clipsearch index` (a subprocess, first run after the model's export is cached) of ``n``
    different H.264 videos: seconds per video, frames encoded, the decoding alone beside."""
    import shutil
    import subprocess
    import tempfile

    import yaml
    from PIL import Image

    from tests.videos import make_video

    from .datasets import benchmark_weights

    photos = coco_photos(n * max(1, round(seconds / 5)) + 20)[20:]
    per = len(photos) // n
    out_dir = CACHE / f"video-index-{size[0]}x{size[1]}-{seconds}s-{n}"
    files = []
    for k in range(n):
        dst = out_dir / f"video{k}.mp4"
        if not dst.exists():
            imgs = [Image.open(p).convert("RGB") for p in photos[k * per : (k + 1) * per]]
            make_video(dst, imgs, seconds_each=seconds / per, fps=fps, size=size, gop=gop)
        files.append(dst)
    weights = benchmark_weights(None)
    t0 = time.perf_counter()
    decode_video(files[0], VideoLimits())
    decode_s = time.perf_counter() - t0
    runs = []
    for _ in range(2):  # the first exports and self-checks the model (cached after)
        work = Path(tempfile.mkdtemp(prefix="bench-video-"))
        cfg = {"model": {"weights": str(weights)}, "library": {"roots": [str(out_dir)]},
               "index": {"dir": str(work / "index")}}  # fmt: skip
        (work / "c.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "indexer.cli", "--config", str(work / "c.yaml"), "index",
               "--json", "--no-progress"]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        status = subprocess.run(cmd[:5] + ["status", "--json"], capture_output=True, text=True,
                                check=True)  # fmt: skip
        runs.append({"wall": wall, "report": json.loads(proc.stdout),
                     "frames": json.loads(status.stdout)["videos"]["frames"]})  # fmt: skip
        shutil.rmtree(work)
    rep = runs[-1]["report"]
    return {"videos": n, "wall_s": runs[-1]["wall"], "run_s": rep["seconds"],
            "s_per_video": rep["seconds"] / n, "decode_s_per_video": decode_s,
            "frames": runs[-1]["frames"],
            "added": rep["added"], "errors": rep["errors"], "first_run_wall_s": runs[0]["wall"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="video length (default 60)")
    ap.add_argument("--size", type=int, nargs=2, default=[1280, 720], metavar=("W", "H"))
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--gop", type=int, default=30, help="frames between keyframes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--index", type=int, default=0, metavar="N",
                    help="also time `clipsearch index` of N different H.264 videos")
    args = ap.parse_args(argv)
    import av

    files = make_videos(args.seconds, tuple(args.size), args.fps, args.gop)
    variants = {"full decode": VideoLimits(), "keyframes only": VideoLimits(keyframes_only=True)}
    rows = []
    for codec, path in files.items():
        times: dict[str, list[float]] = {v: [] for v in variants}
        frames: dict[str, int] = {}
        duration = 0.0
        for _ in range(args.repeats):
            for variant, limits in variants.items():  # (interleaved)
                start = time.perf_counter()
                dec = decode_video(path, limits)
                times[variant].append(time.perf_counter() - start)
                frames[variant], duration = len(dec.frames), dec.duration_ms / 1000
        for variant in variants:
            t = statistics.median(times[variant])
            rows.append({"codec": codec, "variant": variant, "seconds": t,
                         "frames": frames[variant], "video_seconds": duration,
                         "realtime": duration / t, "bytes": path.stat().st_size})  # fmt: skip
        print(f"[{codec}] done", file=sys.stderr, flush=True)
    print(f"\n{args.seconds} s videos of {args.size[0]}x{args.size[1]} at {args.fps} fps "
          f"(a keyframe every {args.gop} frames, photo scenes of 5 s), PyAV {av.__version__}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats} runs\n")  # fmt: skip
    print("| codec | decoding | s per video | frames sampled | x realtime |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['codec']} | {r['variant']} | {r['seconds']:.2f} | {r['frames']} | "
              f"{r['realtime']:.0f} |")  # fmt: skip
    doc = {"seconds": args.seconds, "size": args.size, "fps": args.fps, "gop": args.gop,
           "repeats": args.repeats, "cpus": os.cpu_count(), "pyav": av.__version__,
           "rows": rows}  # fmt: skip
    if args.index:
        doc["index"] = bench_index(args.index, args.seconds, tuple(args.size), args.fps, args.gop)
        i = doc["index"]
        print(f"\nclipsearch index of {i['videos']} videos: {i['run_s']:.2f} s in the run "
              f"({i['s_per_video']:.2f} s a video; decoding alone {i['decode_s_per_video']:.2f} "
              f"s), {i['frames']} frames, {i['added']} added, {i['errors']} errors; process {i['wall_s']:.1f} s")
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
