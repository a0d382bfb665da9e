"""Issue 16 acceptance numbers on real photos: concepts and relevance feedback from augmented
copies of one photo, with a random checkpoint (pretrained weights cannot be downloaded here).

    .venv/bin/python -m bench.bench_learn_quality [--weights CKPT | --arch RN50] [--sources 12]
        [--sets ...]

The library is coco-mini (239 photos) plus the sample photos; for each source photo X (spread
over both sets) 12 augmentations (``tests.augment``: crops, flips, colour changes, resizes) join
it. Reported per X: precision@10 of a concept taught from 3 copies (examples left out of the
ranking) and whether it ranks every other copy above every other photo; the best
single-example image query (any member of X's family as the query, itself left out); relevance
feedback: one copy as the query, precision@10 alone vs with two more copies marked good (the
query and the marks left out of both rankings). ``--sets``: the augmentation sets measured
(``all`` = crops + flips + colour + resizes, or kinds joined by ``+``; ``@S`` scales every
change by the strength S, ``tests.augment``); the per-photo table is of
the first, a summary row per set follows, with the concept fitted on centred vectors (the
default) and on the raw ones. The set ``clustered`` is the issue's test concept taken
literally, "augmentations whose vectors cluster": of 96 copies mixing all four kinds, the
first 13 nearer to X than any other library photo is (cosine), whatever the model; a photo
with fewer such copies is not measured (precision@10 needs 10 copies beside the 3 examples).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import benchmark_weights

REPO = Path(__file__).resolve().parent.parent
COCO = REPO.parent / "shared" / "datasets" / "coco-mini"


def _p10(scores: np.ndarray, relevant: set[int], exclude: set[int]) -> float:
    order = [i for i in np.argsort(-scores, kind="stable") if i not in exclude][:10]
    return sum(i in relevant for i in order) / 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", help="checkpoint (default: a cached random --arch)")
    ap.add_argument("--arch", default="ViT-B/32",
                    help="the random checkpoint's architecture: an OpenAI variant or a tests one")
    ap.add_argument("--sources", type=int, default=12, help="source photos X")
    ap.add_argument("--coco", default=str(COCO))
    ap.add_argument("--sets", default="clustered,all,flip+colour+resize,crop,colour,flip,resize",
                    help="augmentation sets, comma-separated (kinds joined by +)")
    args = ap.parse_args()

    from indexer.config import config_from_dict
    from indexer.embed.encoder import ClipEncoder
    from indexer.learn.fit import fit_concept, logits
    from indexer.search.feedback import rocchio
    from tests.augment import KINDS, augmented_copies

    coco = sorted(Path(args.coco).glob("*2017/*.jpg"))
    samples = sorted(p for p in (REPO / "data" / "samples").iterdir()
                     if p.suffix in (".jpg", ".png"))  # fmt: skip
    if not coco:
        raise SystemExit(f"coco-mini not found under {args.coco}")
    base = coco + samples
    n_s = max(1, args.sources // 4)
    picks = [coco[i] for i in np.linspace(0, len(coco) - 1, args.sources - n_s).astype(int)]
    picks += [samples[i] for i in np.linspace(0, len(samples) - 1, n_s).astype(int)]
    weights = benchmark_weights(args.weights, args.arch)
    cfg = config_from_dict({"model": {"weights": str(weights)}})
    enc = ClipEncoder.from_config(cfg)

    def encode(paths: list[Path]) -> np.ndarray:
        out = []
        for lo in range(0, len(paths), 32):
            batch = []
            for p in paths[lo : lo + 32]:
                with Image.open(p) as im:
                    batch.append(enc.preprocess(im.convert("RGB")))
            out.append(enc.encode_images(batch))
        return np.concatenate(out)

    lib = encode(base)
    summary = []
    for n_set, name in enumerate(args.sets.split(",")):
        set_name, _, strength = name.partition("@")
        kinds = KINDS if set_name in ("all", "clustered") else tuple(set_name.split("+"))
        rows = _measure(picks, base, lib, kinds, encode, fit_concept, logits, rocchio,
                        augmented_copies, clustered=set_name == "clustered",
                        strength=float(strength or 1))  # fmt: skip
        if n_set == 0:
            print(f"model: {weights.name}; library {len(base)} photos + 12 copies of each X; "
                  f"augmentations: {name}\n")  # fmt: skip
            print("| photo X | copies (made) | nearest neighbour in the family | concept P@10 "
                  "(3 copies) | all copies above others | best single-example query P@10 | "
                  "some member ranks all first | query alone P@10 | + 2 good marks P@10 |")
            print("|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r[0]} | {r[8]} | {r[9]:.0%} | {r[1]:.1f} | "
                      f"{'yes' if r[2] else 'no'} | {r[5]:.1f} | {'yes' if r[10] else 'no'} | "
                      f"{r[6]:.1f} | {r[7]:.1f} |")
        summary.append((name, np.mean([[*r[1:8], r[9], r[10]] for r in rows], axis=0)))
    print("\n| augmentations | nearest neighbour in the family | concept P@10 | X's copies all "
          "first | uncentred concept P@10 | uncentred: all first | best single-example P@10 "
          "| some member ranks all first | query alone | + 2 marks |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m in summary:
        print(f"| {name} | {m[7]:.0%} | {m[0]:.2f} | {m[1]:.0%} | {m[2]:.2f} | {m[3]:.0%} | "
              f"{m[4]:.2f} | {m[8]:.0%} | {m[5]:.2f} | {m[6]:.2f} |")


def _measure(picks, base, lib, kinds, encode, fit_concept, logits, rocchio, augmented_copies,  # noqa: ANN001, ANN202
             clustered: bool = False, strength: float = 1.0):  # fmt: skip
    """Per photo X: (name, concept P@10, all above, uncentred P@10, uncentred all above, best
    single-example P@10, query alone P@10, + 2 marks P@10, copies used (of those made), share
    of the family whose nearest other photo is of the family (how well its vectors cluster),
    whether some member as the query ranks every other member first)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for x in picks:
            x_vec = lib[[base.index(x)]]
            others = np.delete(lib, base.index(x), axis=0)
            made = 96 if clustered else 12
            copy_vecs = encode(augmented_copies(x, Path(tmp), made, kinds=kinds,
                                                strength=strength))
            if clustered:  # nearer to X than any other photo is
                near = (copy_vecs @ x_vec[0]) > (others @ x_vec[0]).max()
                copy_vecs = copy_vecs[near][:13]
            if len(copy_vecs) < (13 if clustered else 4):
                print(f"{x.name}: {len(copy_vecs)} of {made} copies cluster; not measured")
                continue
            fam_vecs = np.concatenate([x_vec, copy_vecs])
            v = np.concatenate([fam_vecs, others])  # family first: ids 0..12
            fam, n_fam = set(range(len(fam_vecs))), len(fam_vecs)
            sims = fam_vecs @ v.T  # each member as the query (row i: member i)
            others_max = sims[:, n_fam:].max(axis=1)
            own = sims[:, :n_fam].copy()
            own[np.arange(n_fam), np.arange(n_fam)] = -np.inf
            nn_in = float((own.max(axis=1) > others_max).mean())
            own[np.arange(n_fam), np.arange(n_fam)] = np.inf
            # can any one member rank every other member first?
            single_first = bool((own.min(axis=1) > others_max).any())
            ex = [1, 2, 3]
            rng = np.random.default_rng(0)
            bg = np.delete(v, ex, axis=0)[rng.permutation(len(v) - 3)[:2000]]
            rest = [i for i in range(len(v)) if i not in ex]
            out = [x.name]
            for centre in (True, False):
                c = fit_concept(v[ex], v[:0], bg, centre=centre)
                centers = None if c.center is None else c.center[None]
                s = logits(v, c.weights[None], np.array([c.bias]), centers)[:, 0]
                above = (s[[i for i in rest if i in fam]].min()
                         > s[[i for i in rest if i not in fam]].max())  # fmt: skip
                out += [_p10(s, fam - set(ex), set(ex)), bool(above)]
            single = max(_p10(sims[i], fam - {i}, {i}) for i in fam)
            skip = {1, 2, 3}
            alone = _p10(v @ v[1], fam - skip, skip)
            fb = _p10(v @ rocchio(v[1], v[[2, 3]], v[:0]), fam - skip, skip)
            rows.append((*out, single, alone, fb, f"{len(copy_vecs)} ({made})", nn_in,
                         single_first))  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
