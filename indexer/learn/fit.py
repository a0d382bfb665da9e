"""Fitting a personal concept on stored vectors: logistic regression, threshold by CV.

The positives are the user's examples (and a text hint's embedding, if given), the negatives
the user's counter-examples plus a random sample of the library (most photos are not the
concept). The model works on *centred* vectors, ``(x - c) / |x - c|`` with ``c`` the mean of
the negatives: CLIP vectors share a large common component, and removing it before the
renormalisation lets a few examples define a direction that separates them from the rest
(measured in docs/benchmarks.md: precision@10 0.69 -> 0.77 on augmented families with a random
ViT-B/32, and every other copy ranked first where the copies' vectors cluster). The threshold is calibrated on held-out scores: each positive is scored by a model
fitted without it (its fold of ``_FOLDS``: leave-one-out for 3 examples), the negatives
likewise, and the
threshold sits between the weakest held-out positive and the strongest held-out negatives.
scikit-learn is imported only when a concept is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_EXAMPLES = 3
NEGATIVE_SAMPLE = 2000  # random library photos used as negatives
_FOLDS = 3
_C = 10.0  # weak regularisation: CLIP vectors share a large common component
_NEG_QUANTILE = 0.995  # held-out negatives kept below the threshold (if the positives allow)
HINT_WEIGHT = 0.5  # a text hint pulls the concept's direction this far toward the text
_EXPLICIT_WEIGHT = 5.0  # a user's counter-example counts as much as this many random photos
_TOL = 1e-4  # the solver's tolerance (scikit-learn's default)


@dataclass
class FittedConcept:
    """A linear concept over unit vectors: ``logit(x) = x @ weights + bias``."""

    weights: np.ndarray  # (d,) float32
    bias: float
    threshold: float  # on the logit: photos scoring >= it carry the concept
    stats: dict  # what the calibration saw (held-out positive / negative scores)
    center: np.ndarray | None = None  # (d,) float32: logit((x - c) / |x - c|); None: of x


def centred(x: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """``(x - center) / |x - center|`` row by row (``x`` itself when ``center`` is None)."""
    x = np.asarray(x, np.float32)
    if center is None:
        return x
    z = x - center
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def _fit_lr(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, prior: np.ndarray | None, init=None  # noqa: ANN001
) -> tuple[np.ndarray, float, object]:
    """Logistic regression; a text hint's unit ``prior`` adds ``HINT_WEIGHT * |coef|`` along it.
    ``init``: a fitted model whose coefficients start the solver (the held-out refits)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=_C, class_weight="balanced", max_iter=500, tol=_TOL,
                               warm_start=init is not None)  # fmt: skip
    if init is not None:
        model.coef_, model.intercept_ = init.coef_.copy(), init.intercept_.copy()
    model.fit(x, y, sample_weight=w)
    coef = model.coef_[0].astype(np.float32)
    if prior is not None:
        coef = coef + HINT_WEIGHT * float(np.linalg.norm(coef)) * prior
    return coef, float(model.intercept_[0]), model


def fit_concept(
    positives: np.ndarray,
    negatives: np.ndarray,
    background: np.ndarray,
    prior: np.ndarray | None = None,
    seed: int = 0,
    centre: bool = True,
) -> FittedConcept:
    """Fit a concept on ``positives`` (n >= 3, d), ``negatives`` (the user's, m x d, may be
    empty) and ``background`` (random library vectors, the examples already left out);
    ``prior``: a text hint's unit vector; ``centre=False``: on the raw vectors. Raises
    ValueError on fewer than 3 positives or no negatives at all."""
    pos = np.asarray(positives, dtype=np.float32)
    if pos.ndim != 2 or len(pos) < MIN_EXAMPLES:
        raise ValueError(f"a concept needs at least {MIN_EXAMPLES} example photos, got {len(pos)}")
    neg = np.concatenate([np.asarray(negatives, np.float32).reshape(-1, pos.shape[1]),
                          np.asarray(background, np.float32).reshape(-1, pos.shape[1])])  # fmt: skip
    if len(neg) == 0:
        raise ValueError("a concept needs negatives: the library has no other photos")
    n_explicit = len(np.asarray(negatives).reshape(-1, pos.shape[1]))
    center = neg.mean(axis=0).astype(np.float32) if centre else None
    pos, neg = centred(pos, center), centred(neg, center)
    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    sw = np.r_[np.ones(len(pos)), np.full(n_explicit, _EXPLICIT_WEIGHT),
               np.ones(len(neg) - n_explicit)]  # fmt: skip
    if prior is not None:
        prior = np.asarray(prior, np.float32).reshape(-1)
        prior = prior / max(float(np.linalg.norm(prior)), 1e-12)
    weights, bias, model = _fit_lr(x, y, sw, prior)
    held_pos, held_neg = _held_out(pos, neg, sw[len(pos):], prior, seed, model)
    in_sample = np.isnan(held_neg)  # too few negatives to hold any out: their fitted logits
    held_neg[in_sample] = neg[in_sample] @ weights + bias
    threshold = _threshold(held_pos, held_neg)
    stats = {"positives": len(pos), "negatives": len(neg), "explicit_negatives": n_explicit,
             "held_out_positive_min": round(float(held_pos.min()), 4),
             "held_out_negative_q995": round(float(np.quantile(held_neg, _NEG_QUANTILE)), 4)
             if held_neg.size else None}  # fmt: skip
    return FittedConcept(weights, bias, threshold, stats, center)


def _held_out(pos: np.ndarray, neg: np.ndarray, nw: np.ndarray, prior, seed: int, init):  # noqa: ANN001
    """Cross-validated logits of every positive and negative (models fitted without them)."""
    rng = np.random.default_rng(seed)
    folds = min(_FOLDS, len(pos))
    pos_fold = np.arange(len(pos)) % folds
    neg_fold = rng.permutation(len(neg)) % folds
    if len(neg) < 2 * folds:  # every training fold keeps all negatives (none held out)
        neg_fold[:] = -1
    held_pos = np.empty(len(pos), np.float32)
    held_neg = np.full(len(neg), np.nan, np.float32)
    for f in range(folds):
        tp, tn = pos[pos_fold != f], neg[neg_fold != f]
        x = np.concatenate([tp, tn])
        y = np.r_[np.ones(len(tp)), np.zeros(len(tn))]
        w, b, _ = _fit_lr(x, y, np.r_[np.ones(len(tp)), nw[neg_fold != f]], prior, init)
        held_pos[pos_fold == f] = pos[pos_fold == f] @ w + b
        held_neg[neg_fold == f] = neg[neg_fold == f] @ w + b
    return held_pos, held_neg


def _threshold(held_pos: np.ndarray, held_neg: np.ndarray) -> float:
    """Midway between the weakest held-out positive and the strongest held-out negatives
    (their 99.5 % quantile); when they overlap, the cut that best separates them."""
    lo = float(held_pos.min())
    if held_neg.size == 0:
        return lo
    hi = float(np.quantile(held_neg, _NEG_QUANTILE))
    if lo > hi:
        return (lo + hi) / 2
    cuts = np.unique(np.r_[held_pos, held_neg])
    tpr = (held_pos[None, :] >= cuts[:, None]).mean(axis=1)
    fpr = (held_neg[None, :] >= cuts[:, None]).mean(axis=1)
    return float(cuts[int(np.argmax(tpr - fpr))])


def logits(
    vectors: np.ndarray, weights: np.ndarray, biases: np.ndarray, centers: np.ndarray | None = None
) -> np.ndarray:
    """(n, c) logits of ``vectors`` (n, d) under ``c`` concepts (``weights`` (c, d), ``centers``
    (c, d) or None; a zero centre row is an uncentred concept). Three matrix products, whatever
    the number of concepts: ``|x - c|^2 = |x|^2 - 2 x.c + |c|^2``."""
    x = np.asarray(vectors, np.float32)
    w = np.asarray(weights, np.float32)
    dots = x @ w.T
    if centers is None:
        return dots + biases
    c = np.asarray(centers, np.float32)
    sq = (x * x).sum(axis=1, keepdims=True) - 2 * (x @ c.T) + (c * c).sum(axis=1)
    return (dots - (w * c).sum(axis=1)) / np.sqrt(np.maximum(sq, 1e-12)) + biases


def probability(logit: np.ndarray) -> np.ndarray:
    """The tag score shown for a logit (the model's probability)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logit, np.float64)))
