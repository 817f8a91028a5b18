"""Known-harmless library chatter, filtered where it is emitted (by message, category and module;
never a blanket ignore), so the console shows the stages, the epochs and the results."""

from __future__ import annotations

import logging
import re
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
LITLOGGER_TIP = re.compile(r"💡 Tip: .*litlogger")
"""Lightning's advertisement for its cloud logger, logged at INFO on every Trainer."""


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message matches a pattern."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_libraries() -> None:
    """Install the filters (idempotent); `abaw` and `abaw-train` call it before any work."""
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(LITLOGGER_TIP))
