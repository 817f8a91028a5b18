"""Ships the top-level `conf/` (Hydra's configs) inside the wheel, as `abaw_lightning/conf`: an
installed `abaw-train` finds its configs there; a source checkout reads `conf/` directly."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    """`build_py` that also copies the YAML configs into the built package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "abaw_lightning" / "conf"
        shutil.copytree("conf", target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithConfigs})
