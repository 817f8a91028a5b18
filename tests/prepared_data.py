"""A tiny prepared dataset in the real layout (README "Prepared dataset layout"), for stage tests.

Images are 32x32 JPEGs whose colour encodes the expression and whose brightness gradient encodes
valence-arousal, so a few training steps are enough to move the metrics.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from abaw_lightning.data.ingest.balancing import expr_va_weights, expr_weights, va_weights

SIZE = 32
NAN = float("nan")


def face(expr: int, valence: float, arousal: float, rng: np.random.Generator) -> np.ndarray:
    hue = 0 if expr < 0 else expr * 25
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = hue, 200, 128
    image = cv2.cvtColor(image, cv2.COLOR_HSV2BGR).astype(np.float32)
    ramp = np.linspace(-1, 1, SIZE, dtype=np.float32)
    v, a = (0.0 if np.isnan(valence) else valence), (0.0 if np.isnan(arousal) else arousal)
    image += 60 * v * ramp[None, :, None] + 60 * a * ramp[:, None, None]
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _frames(
    root: Path, name: str, n: int, videos: int, rng, expr: bool, va: bool, source: str
) -> pd.DataFrame:
    rows = []
    for index in range(n):
        video = f"{name}_{index % videos}"
        label = int(rng.integers(0, 7)) if expr else -1
        valence, arousal = rng.uniform(-1, 1, 2) if va else (NAN, NAN)
        image = Path("crops") / name / f"{index:05d}.jpg"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / image), face(label, valence, arousal, rng))
        rows.append(
            {
                "image": str(image),
                "source": source,
                "video": video,
                "frame": index // videos + 1,
                "expr": label,
                "valence": valence,
                "arousal": arousal,
            }
        )
    table = pd.DataFrame(rows).sort_values(["video", "frame"], ignore_index=True)
    return table.astype(
        {"expr": "int8", "valence": "float32", "arousal": "float32", "frame": "int64"}
    )


def write_prepared(root: Path, rows: int = 48, videos: int = 3, seed: int = 0) -> Path:
    """Write parts, validation and Aff-Wild2 train tables with ``rows`` frames each.

    Training tables hold ``videos`` videos (``rows / videos`` frames each); the first video of each
    task also carries the other task's labels (shared annotations).
    """
    rng = np.random.default_rng(seed)
    for folder in ("parts", "affwild2"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    expr = _frames(root, "expr", rows, videos, rng, expr=True, va=False, source="affwild2")
    shared = expr["video"] == "expr_0"
    expr.loc[shared, ["valence", "arousal"]] = rng.uniform(-1, 1, (shared.sum(), 2)).astype(
        np.float32
    )
    va = _frames(root, "va", rows, videos, rng, expr=False, va=True, source="affwild2")
    shared = va["video"] == "va_0"
    va.loc[shared, "expr"] = rng.integers(0, 7, shared.sum()).astype(np.int8)
    both = _frames(root, "expr_va", rows, videos, rng, expr=True, va=True, source="affectnet")
    expr["weight"] = expr_weights(expr["expr"].to_numpy())
    va["weight"] = va_weights(va["valence"].to_numpy(), va["arousal"].to_numpy())
    both["weight"] = expr_va_weights(*(both[c].to_numpy() for c in ("expr", "valence", "arousal")))
    for name, table in (("expr", expr), ("va", va), ("expr_va", both)):
        table.to_parquet(root / "parts" / f"{name}.parquet")
    expr.drop(columns="weight").to_parquet(root / "affwild2" / "train_expr.parquet")
    va.drop(columns="weight").to_parquet(root / "affwild2" / "train_va.parquet")
    _frames(root, "val_expr", rows, 2, rng, expr=True, va=False, source="affwild2").to_parquet(
        root / "affwild2" / "val_expr.parquet"
    )
    _frames(root, "val_va", rows, 2, rng, expr=False, va=True, source="affwild2").to_parquet(
        root / "affwild2" / "val_va.parquet"
    )
    return root
