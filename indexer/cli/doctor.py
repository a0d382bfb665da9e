"""``clipsearch doctor``: how faithful each fast path is on your checkpoint and photos."""

from __future__ import annotations

import argparse

from indexer.cli.registry import command, dump
from indexer.config import Config


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photos", type=int, default=32, metavar="N",
                   help="library photos to measure on (default 32)")  # fmt: skip
    p.add_argument("--prompt", action="append", dest="prompts", metavar="TEXT",
                   help="a prompt to measure on (repeat; default: the calibration prompts)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")


def _cos(mean: float | None, low: float | None) -> str:
    return "exact" if mean is None else f"{mean:.5f} / {low:.5f}"


@command("doctor", "measure every fast path on your checkpoint and photos", _doctor_args)
def _cmd_doctor(args: argparse.Namespace, cfg: Config) -> int:
    from clipmodel.fidelity import MEAN_BAR, MIN_BAR
    from indexer.ingest.doctor import run_doctor
    from indexer.ocr.engines import engine_report

    doc = run_doctor(cfg, max(args.photos, 1), args.prompts)
    doc["ocr"] = {"enabled": cfg.ocr.enabled, "engine": cfg.ocr.engine,
                  "engines": engine_report(cfg.ocr.languages)}  # fmt: skip
    if args.json:
        dump(doc)
        return 0
    where = "library photos" if doc["own_photos"] else "calibration photos (library empty)"
    print(f"checkpoint: {doc['checkpoint']}")
    hint = {"HEIF": "pip install 'clipsearch[heif]'", "RAW": "pip install 'clipsearch[raw]'",
            "video": "pip install 'clipsearch[video]'"}
    print("formats: " + "; ".join(f"{name} {how or 'not installed: ' + hint.get(name, '')}"
                                  for name, how in doc["formats"].items()))  # fmt: skip
    print(f"measured on {doc['photos']} {where} and {doc['prompts']} prompts, against the exact "
          f"fp32 path; bars: mean >= {MEAN_BAR}, min >= {MIN_BAR}")  # fmt: skip
    print(f"{'path':<28} {'images mean / min':<19} {'texts mean / min':<19} {'verdict':<9} s")
    for r in doc["rows"]:
        texts = "-" if r["texts_mean"] is None and r["images_mean"] is not None else _cos(
            r["texts_mean"], r["texts_min"])  # fmt: skip
        verdict = "faithful" if r["passed"] else "refused"
        print(f"{r['path']:<28} {_cos(r['images_mean'], r['images_min']):<19} {texts:<19} "
              f"{verdict:<9} {r['seconds']:.1f}")  # fmt: skip
    state = "enabled" if cfg.ocr.enabled else "off (ocr.enabled: false)"
    print(f"OCR: {state}, engine {cfg.ocr.engine}")
    for name, e in doc["ocr"]["engines"].items():
        print(f"  {name:<10} {'available' if e['available'] else 'missing'}: {e['detail']}")
    return 0
