"""The console filters of `abaw_lightning.quiet` in every process a Trainer trains in."""

from __future__ import annotations

import pytorch_lightning as pl

from abaw_lightning.quiet import quiet_libraries


class QuietLibraries(pl.Callback):
    """Installs `quiet_libraries` at setup: `trainer=ddp` (ddp_spawn) trains in fresh
    interpreters that never ran the command's own call."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        quiet_libraries()
