"""Write a folder so that it appears whole or not at all (imports, joined weights)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; when the block succeeds it replaces ``target``, otherwise
    it is removed. Why: an interrupted import or join must never leave a folder that looks complete (the bundled
    cache and ``source.resolve`` trust what they find)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
