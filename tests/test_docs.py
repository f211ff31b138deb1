"""Every Python example in README.md and docs/ runs as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, int, str]]:
    out = []
    for f in FILES:
        for i, m in enumerate(BLOCK.finditer(f.read_text()), 1):
            out.append((f.relative_to(ROOT).as_posix(), i, m.group(1)))
    return out


def test_there_are_examples() -> None:
    """The docs hold examples to run (a renamed fence would otherwise pass silently)."""
    assert len(blocks()) >= 12


@pytest.mark.parametrize(("name", "index", "code"), blocks(),
                         ids=[f"{n}#{i}" for n, i, _ in blocks()])
def test_example_runs(name: str, index: int, code: str, tmp_path: Path) -> None:
    """Run one block as a script next to the sample learnkit.toml."""
    shutil.copy(ROOT / "learnkit.toml", tmp_path / "learnkit.toml")
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{name} block {index} failed:\n{proc.stderr}"


def test_every_linked_file_is_committed() -> None:
    """Relative links in README.md and docs/ name files that exist and git does not ignore."""
    import re
    import subprocess

    for doc in FILES:
        for target in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            path = (doc.parent / target).resolve()
            assert path.exists(), f"{doc.name} links to missing {target}"
            ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
            assert ignored.returncode == 1, f"{doc.name} links to {target}, which git ignores"
