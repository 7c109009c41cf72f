"""Ship `pytest_costguard.pth`, the start-up hook that meters child processes (`metering.children`).

setuptools has no declarative way to put a file at the top of site-packages, where `site` reads `.pth` files:
the wheel's build and the editable wheel each copy it there. The hook does nothing unless a metered pytest
session named itself in `PYTEST_COSTGUARD_SESSION`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "pytest_costguard.pth"


class BuildPyWithPth(build_py):
    """Put the start-up hook at the wheel's top level (site-packages once installed)."""

    def run(self) -> None:
        super().run()
        self.copy_file(PTH, str(Path(self.build_lib, PTH)), preserve_mode=False)


class EditableWheelWithPth(editable_wheel):
    """Put the start-up hook in the editable wheel too: `pip install -e .` meters children as well."""

    def _create_wheel_file(self, bdist_wheel: Any) -> str:
        from wheel.wheelfile import WheelFile

        wheel_path: str = super()._create_wheel_file(bdist_wheel)
        with WheelFile(wheel_path, "a") as wheel:
            wheel.write(PTH, PTH)
        return wheel_path


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
