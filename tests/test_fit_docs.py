"""docs/training.md: every Python block runs as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "training.md"


@pytest.mark.usefixtures("one_thread")
def test_training_page_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": "training_md"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC}:block{i}", "exec"), namespace)  # our own file, not input
    out = capsys.readouterr().out
    assert "epoch 5/5 - train_loss" in out  # the first example, off a terminal: verbose 2
    assert "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,time" in out
    assert "[1, 2, 3, 4, 5, 6]" in out
