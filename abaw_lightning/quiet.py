"""Known-harmless library chatter, filtered where it is emitted (by message, category and module;
never a blanket ignore), so the console shows the stages, the epochs and the results; and
OpenCV's and FFmpeg's log levels lowered, their lines naming no file that abaw reports by name."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

WARNINGS = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"pytorch_lightning\.utilities\._pytree",
    ),
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        UserWarning,  # Lightning's PossibleUserWarning (a subclass), without importing Lightning
        r"pytorch_lightning\.loops\.fit_loop",
    ),
    (
        r"Checkpoint directory .* exists and is not empty\.",
        UserWarning,
        r"pytorch_lightning\.callbacks\.model_checkpoint",
    ),
    (
        r"It is recommended to use `self\.log\('val/\w+', \.\.\., sync_dist=True\)`",
        UserWarning,
        r"pytorch_lightning\.trainer\.connectors\.logger_connector\.result",
    ),
)
"""(message regex, category, module regex) of the warnings that every stage or resume printed:
a torch deprecation inside Lightning, "the epoch has fewer batches than log_every_n_steps"
(logging still happens across epochs), "the checkpoint folder is not empty" (a resume), and,
under DDP, "log val/* with sync_dist": those values come from torchmetrics' compute(), which
already reduced the states of every process."""

LIGHTNING_INFO_LOGGER = "pytorch_lightning.utilities.rank_zero"
LITLOGGER_TIP = re.compile(
    r"💡 Tip: .*litlogger"
    r"|`Trainer\.fit` stopped: `max_epochs=\d+` reached\."
    r"|Restoring states from the checkpoint path at "
    r"|Restored all states from the checkpoint at "
)
"""Lightning's INFO lines that the console says better: its advertisement for its cloud logger
(on every Trainer), a fit that reached max_epochs (the epoch lines show it), and a resume (the
stage's own `resuming from <checkpoint>` line)."""


OPENCV_LOG_LEVELS = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "8"}
"""OpenCV's own log at ERROR, FFmpeg's at AV_LOG_FATAL (8), unless the user set them: their
warnings and per-file errors ("PNG input buffer is incomplete", "moov atom not found", "Error at
MB") name no file and repeat what abaw reports by name ("cannot open video X", unreadable images
left out, "N of the M frames its container lists could be decoded"). Set in the environment,
so spawned workers inherit them."""


def quiet_opencv() -> None:
    """Lower OpenCV's and FFmpeg's log levels (OPENCV_LOG_LEVELS); FFmpeg reads its level when it
    opens its first file, OpenCV at import, so a cv2 imported already is set directly."""
    user_level = "OPENCV_LOG_LEVEL" in os.environ
    for name, level in OPENCV_LOG_LEVELS.items():
        os.environ.setdefault(name, level)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and not user_level:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message matches a pattern."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_libraries() -> None:
    """Install the filters (idempotent); `abaw` and `abaw-train` call it before any work."""
    quiet_opencv()
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(LITLOGGER_TIP))
