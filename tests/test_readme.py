"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the examples write land here
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})


# "name = ...   # (16, 1, 16, 16)" or "expression   # (32, 2): ...": a shape promised in a comment
SHAPE_COMMENT = re.compile(r"^(?P<code>[^#]+?)\s+#\s*\((?P<shape>\d+(?:,\s*\d+)*)\)")


def test_readme_shapes_in_comments_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checked = 0
    for block in BLOCKS:
        namespace: dict = {}
        exec(compile(block, "README.md example", "exec"), namespace)
        for line in block.splitlines():
            m = SHAPE_COMMENT.match(line)
            if m is None:
                continue
            code = m["code"].strip()
            target = code.split("=")[0].split(",")[0].strip() if " = " in code else code
            want = tuple(int(v) for v in m["shape"].split(","))
            got = tuple(eval(target, namespace).shape)
            assert got == want, f"README says {line.strip()!r}; {target}.shape is {got}"
            checked += 1
    assert checked >= 3
