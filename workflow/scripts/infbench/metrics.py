"""Accuracy: predictions for every image, written once against the Session interface.

``evaluate`` reads the tensor cache through its memmap, one batch at a time, and keeps the
top-5 classes of every image plus the raw logits of the first ``keep_logits`` images (for
logit-level agreement, which is what still means something when the weights are random).
``score`` compares one cell with the labels and with the reference cell. Logits that are
NaN or infinite (fp16 overflow, typically) are counted per image, never averaged into a
number: a cell with any says so instead of its agreement figures.
"""

import numpy as np

from infbench.files import release_rows


def evaluate(session, cache, batch_size, keep_logits, progress=None):
    """Top-5 classes (N, 5), the logits of the first ``keep_logits`` images, and which
    images had a non-finite logit (N,) bool.

    The last partial batch is padded by repeating its last image (fixed-shape runtimes such
    as TensorRT engines and nn.Graph need whole batches); the padding is discarded.
    ``progress`` (an ``infbench.progress.Progress``) hears how many images are done.
    """
    n = cache.shape[0]
    top5 = np.empty((n, 5), dtype=np.int32)
    nonfinite = np.zeros(n, dtype=bool)
    kept = []
    for start in range(0, n, batch_size):
        images = np.asarray(cache[start : start + batch_size])
        real = images.shape[0]
        if real < batch_size:
            pad = np.repeat(images[-1:], batch_size - real, axis=0)
            images = np.concatenate([images, pad])
        out = session.run(session.stage(images))
        session.sync(out)
        logits = session.logits(out)[:real].astype(np.float32)
        nonfinite[start : start + real] = ~np.isfinite(logits).all(axis=1)
        top5[start : start + real] = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        if start < keep_logits:
            kept.append(logits[: keep_logits - start])
        release_rows(cache, start, start + real)  # a pass over the cache keeps one batch resident
        if progress is not None:
            progress.update(start + real)
    kept = np.concatenate(kept) if kept else np.zeros((0, 0), np.float32)
    return top5, kept, nonfinite


def score(top5, labels, logits, reference=None, nonfinite=None):
    """Top-1/top-5 against labels; mismatches and logit agreement against a reference cell.

    ``reference`` is a (top5, logits) pair of the reference cell, or None; ``nonfinite``
    the cell's per-image non-finite flags from ``evaluate`` (None: all finite). The
    agreement (cosine, relative error) is left out when either cell's kept logits are not
    all finite.
    """
    n = len(labels)
    summary = {
        "images": int(n),
        "classes": int(len(np.unique(labels))),
        "top1": float(np.mean(top5[:, 0] == labels)),
        "top5": float(np.mean((top5 == labels[:, None]).any(axis=1))),
        "distinct_predictions": int(len(np.unique(top5[:, 0]))),
        "mismatches": None,
        "logit_images": 0,
        "cosine": None,
        "rel_error": None,
        "nonfinite_images": 0 if nonfinite is None else int(np.sum(nonfinite)),
    }
    if reference is None:
        return summary
    ref_top5, ref_logits = reference
    summary["mismatches"] = int(np.sum(top5[:, 0] != ref_top5[:, 0]))
    k = min(len(logits), len(ref_logits))
    if k and np.isfinite(logits[:k]).all() and np.isfinite(ref_logits[:k]).all():
        a = logits[:k].astype(np.float64)
        b = ref_logits[:k].astype(np.float64)
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        summary["logit_images"] = int(k)
        summary["cosine"] = float(np.mean(cos))
        summary["rel_error"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return summary
