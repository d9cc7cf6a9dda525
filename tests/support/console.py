"""What a default console (dog_jax.console) must not show, recognised in a captured output."""

import re
from pathlib import Path

import dog_jax

_PACKAGE_FILES = {path.name for path in Path(dog_jax.__file__).parent.rglob("*.py")} | {"train.py"}
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.-]+):\d+\] ")


def third_party_info_lines(output: str) -> list[str]:
    """The INFO lines (absl's or native code's format) of ``output`` not logged by dog_jax's files,
    and TensorFlow's oneDNN notice: what a default console must not show."""
    lines = []
    for line in output.splitlines():
        match = _ABSL_LINE.match(line)
        if "oneDNN custom operations" in line or (match and match[1] == "I" and match[2] not in _PACKAGE_FILES):
            lines.append(line)
    return lines
