"""Wall time of the paper's whole table (METHOD.md section 7, ``experiment=paper``) x 10 seeds,
from the per-stage throughput that `gpu_suite.py` measured, on its GPU and scaled to an RTX 4090.

    python benchmarks/paper_estimate.py $OUT/gpu_suite.json [--manifest data/prepared/manifest.json]

Per seed, ``experiment=paper`` trains 6 distinct runs and extracts one feature cache: CNN teachers
with 2 and 3 parts, CNN students without and with shared annotations, the features of the
student, GRU teacher and GRU student. Stage time = epochs x (training items per epoch / training
rate + validation items / validation rate); extraction = cached frames x computed views / rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SEEDS = 10
MAX_EPOCHS = 40
TYPICAL_EPOCHS = 15
"""An assumption: early stopping (patience 5) ending a stage at epoch 15. 40 is the bound."""
CNN_BATCH, GRU_BATCH, WINDOW, STRIDE = 64, 16, 32, 16

FRAMES_PER_VIDEO = 2_600_000 / 581
"""~2.6 M Aff-Wild2 frames (README) over the 581 distinct train + validation videos (VA 351 + 71,
EXPR 253 + 70, FORMATS.md, less the 164 with both annotations, the paper): ~4,475 per video."""
ASSUMED_SIZES = {
    "affwild2_cached_frames": 2_600_000,
    "affwild2_val_frames": round((70 + 71) * FRAMES_PER_VIDEO),
    "parts": {
        # EXPR train (253 videos) kept after decimation (Neutral 1/10, Happiness and Sadness 1/2)
        # at an assumed 40/20/10% share of those classes: 0.49; plus ExpW's 91,793 faces.
        "expr": round(253 * FRAMES_PER_VIDEO * 0.49) + 91_793,
        # VA train (351 videos) every 5th frame, plus AFEW-VA's 30,051 frames.
        "va": round(351 * FRAMES_PER_VIDEO / 5) + 30_051,
        # AffectNet training rows with codes 0-6 (287,651 with 0-7, less ~3,750 contempt) + 3,500.
        "expr_va": 287_401,
    },
    "gru_train_frames": {
        "expr": round(253 * FRAMES_PER_VIDEO),
        "va": round(351 * FRAMES_PER_VIDEO),
        "expr_va": round(164 * FRAMES_PER_VIDEO),
    },
    "source": "assumed from public counts (see benchmarks/paper_estimate.py), not a prepare run",
}
RTX_4090_RATIOS = {
    "bf16_tensor": 165.2 / 989.0,
    "memory_bandwidth": 1008.0 / 4800.0,
}
"""RTX 4090 / H200 SXM by the vendors' datasheets: dense bf16 tensor TFLOP/s with fp32
accumulation (165.2 vs 989) and memory bandwidth in GB/s (1,008 vs 4,800). An assumption: the
4090 runs the model side of a stage at the H200's model-only rate times one of these ratios."""


def sizes_from_manifest(path: Path) -> dict:
    """The sizes a real `abaw prepare` reported; the GRU `expr_va` part (frames with both labels)
    is taken as the smaller train table, an upper bound."""
    manifest = json.loads(Path(path).read_text())
    rows = {name: entry["rows"] for name, entry in manifest["tables"].items()}
    train = {task: rows[f"affwild2/train_{task}"] for task in ("expr", "va")}
    return {
        "affwild2_cached_frames": manifest["affwild2_frames"]["checked"],
        "affwild2_val_frames": rows["affwild2/val_expr"] + rows["affwild2/val_va"],
        "parts": {part: rows[f"parts/{part}"] for part in ("expr", "va", "expr_va")},
        "gru_train_frames": {**train, "expr_va": min(train.values())},
        "source": str(path),
    }


def _median(suite: dict, measurement: str, variant: str) -> float | None:
    entry = suite.get("measurements", {}).get(measurement, {}).get("variants", {}).get(variant)
    return None if entry is None else entry["median"]


def rates(suite: dict) -> dict[str, dict[str, float | None]]:
    """Per stage: the measured end-to-end rate and the model-only rate it is bounded by."""
    student = _median(suite, "cnn_student", "end_to_end")
    student_ceiling = _median(suite, "cnn_student", "ceiling")
    teacher_ceiling = _median(suite, "model_steps", "teacher_per_part")
    loader = suite.get("measurements", {}).get("loader", {}).get("variants", {})
    loader_rate = max((v["median"] for k, v in loader.items() if k.startswith("w")), default=None)
    teacher = None
    if student and student_ceiling and teacher_ceiling:
        teacher = student * teacher_ceiling / student_ceiling  # same efficiency as the student
        if loader_rate:
            teacher = min(teacher, loader_rate)
    forward = _median(suite, "extraction", "ceiling")
    gru_step = _median(suite, "gru", "teacher_step_only")
    return {
        "cnn_teacher": {"rate": teacher, "model_only": teacher_ceiling},
        "cnn_student": {"rate": student, "model_only": student_ceiling},
        "cnn_validation": {"rate": _median(suite, "validation", "cnn"), "model_only": forward},
        "extraction": {"rate": _median(suite, "extraction", "steady_state"), "model_only": forward},
        "gru_teacher": {"rate": _median(suite, "gru", "teacher_cached"), "model_only": gru_step},
        "gru_student": {"rate": _median(suite, "gru", "student_cached"), "model_only": gru_step},
    }


def scaled(stage_rates: dict, ratio: float | None) -> dict[str, float | None]:
    """Rates on another card: the lower of the measured rate (its CPU side, same cores assumed)
    and the model-only rate times ``ratio``; None keeps the measured rates."""
    out = {}
    for stage, entry in stage_rates.items():
        rate, model = entry["rate"], entry["model_only"]
        if rate is None or ratio is None:
            out[stage] = rate
        else:
            out[stage] = min(rate, model * ratio) if model else rate * ratio
    return out


def per_seed_seconds(sizes: dict, rate: dict, epochs: int, views: int) -> dict[str, float]:
    """Seconds of each distinct stage of one seed of ``experiment=paper``."""
    parts = sizes["parts"]
    val = sizes["affwild2_val_frames"]
    three = min(parts.values()) // CNN_BATCH * 3 * CNN_BATCH  # images per 3-part epoch
    two = min(parts["expr"], parts["va"]) // CNN_BATCH * 2 * CNN_BATCH
    windows = min(frames // STRIDE for frames in sizes["gru_train_frames"].values())
    gru_frames = windows // GRU_BATCH * 3 * GRU_BATCH * WINDOW

    def cnn(images: int, stage: str) -> float:
        return epochs * (images / rate[stage] + val / rate["cnn_validation"])

    def gru(stage: str) -> float:  # validation at the training rate: an upper bound
        return epochs * (gru_frames + val) / rate[stage]

    return {
        "cnn_teacher_2task": cnn(two, "cnn_teacher"),
        "cnn_teacher": cnn(three, "cnn_teacher"),
        "cnn_student_no_sharing": cnn(three, "cnn_student"),
        "cnn_student": cnn(three, "cnn_student"),
        "features": sizes["affwild2_cached_frames"] * views / rate["extraction"],
        "gru_teacher": gru("gru_teacher"),
        "gru_student": gru("gru_student"),
    }


FORMULA = (
    "table_hours = seeds x sum over the 7 stages of one seed / 3600; CNN stage = epochs x "
    "(floor(min part rows / 64) x parts x 64 / train images/s + validation frames / validation "
    "images/s); features = cached frames x computed views / extraction images/s (once per seed); "
    "GRU stage = epochs x (floor(min(train frames / 16) / 16) x 3 x 16 x 32 + validation frames) "
    "/ GRU frames/s. CNN teacher rate = student end-to-end x teacher/student model-only ratio, at "
    "most the loader rate. Another card: each rate = min(measured, model-only x ratio)."
)


def estimate(suite: dict, sizes: dict | None = None, views: int = 18) -> dict:
    """Hours of the table x 10 seeds, at 40 epochs per stage (the bound) and at 15 (assumed)."""
    sizes = sizes or ASSUMED_SIZES
    stage_rates = rates(suite)
    missing = [stage for stage, entry in stage_rates.items() if not entry["rate"]]
    result = {"formula": FORMULA, "sizes": sizes, "seeds": SEEDS, "views": views}
    result["rates"] = stage_rates
    if missing:
        return {**result, "error": f"not measured: {missing}"}
    cards = {"measured": None, **{f"rtx4090_{k}": v for k, v in RTX_4090_RATIOS.items()}}
    result["assumptions"] = {
        "rtx4090_ratios": RTX_4090_RATIOS,
        "typical_epochs": TYPICAL_EPOCHS,
        "not_counted": "checkpoint saves, process start-up, the first epoch's cuDNN autotuning",
    }
    for card, ratio in cards.items():
        card_rates = scaled(stage_rates, ratio)
        for epochs in (MAX_EPOCHS, TYPICAL_EPOCHS):
            seconds = per_seed_seconds(sizes, card_rates, epochs, views)
            result[f"{card}_{epochs}_epochs"] = {
                "per_seed_hours": {k: round(v / 3600, 3) for k, v in seconds.items()},
                "table_x10_hours": round(SEEDS * sum(seconds.values()) / 3600, 1),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", type=Path, help="gpu_suite.json")
    parser.add_argument("--manifest", type=Path, help="a real prepared folder's manifest.json")
    args = parser.parse_args()
    suite = json.loads(args.suite.read_text())
    sizes = sizes_from_manifest(args.manifest) if args.manifest else None
    print(json.dumps(estimate(suite, sizes, suite.get("views", 18)), indent=2))


if __name__ == "__main__":
    main()
