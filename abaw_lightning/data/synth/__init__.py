"""`abaw synth`: the four datasets in their real on-disk formats, with drawn faces that carry a
learnable signal, and `synth.json` recording every planted quirk and the expected counts.
`generate` writes them; `synth_command` is the command line."""

from abaw_lightning.data.synth.generate import generate

__all__ = ["generate"]
