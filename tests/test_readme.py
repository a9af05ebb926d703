"""Every Python block in README.md runs as written, at a tiny size, in a fresh process."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.+?)```", (ROOT / "README.md").read_text(), re.S)
# The README's sizes, scaled down to one epoch. (Not narrower students: TensorFlow 2.21's oneDNN kernels
# corrupt the heap when a width-4 resnet8 meets the epoch's smaller last batch, with plain Keras too.)
TINY = {"epochs=20": "epochs=1"}


def test_the_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    code = BLOCKS[index]
    for readme_value, tiny_value in TINY.items():
        code = code.replace(readme_value, tiny_value)
    check = "\nimport keras, os\nfor name in os.listdir('.'):\n    if name.endswith('.keras'):\n"
    check += "        print('loaded', name, keras.saving.load_model(name).output.shape)\n"
    result = subprocess.run(
        [sys.executable, "-c", code + check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Piped, Keras's progress output is plain lines: no ANSI colours, no \b or \r redraws.
    assert not {"\x1b", "\b", "\r"} & set(result.stdout), repr(result.stdout[-2000:])
    if "student.save(" in BLOCKS[index]:
        assert "loaded student.keras (None, 10)" in result.stdout
