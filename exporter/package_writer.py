"""Atomic package writing: everything is built in a hidden staging directory next to the target, the
manifest (with every file's sha256) is written last, and only then is the directory renamed into place.
An existing package is replaced only after the new one is complete.

A writer killed on the way (SIGKILL, power loss) leaves scratch folders named ``.NAME.staging-PID-*``,
``.NAME.final-PID-*`` or ``.NAME.old-PID-*`` (``runtime.package.SCRATCH_DIR``): ``open_package`` refuses them,
and the next write of NAME (``recover``) removes those of dead writers, first moving the previous package back
when the kill fell between setting it aside and putting the new one in place. The PID in the name keeps a live
writer's folders safe from a concurrent one; it only means something on this machine (not across NFS clients).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmedge.errors import ExportError, MmedgeError
from mmedge.runtime.manifest import MANIFEST_NAME, Manifest
from mmedge.runtime.package import SCRATCH_DIR, sha256_file


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory; choose another output path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ExportError(f"{out_dir} exists, is not empty and is not an mmedge package; "
                          "choose an empty or new directory (mmedge only replaces its own packages)")


def _scratch_prefix(out_dir: Path, kind: str) -> str:
    return f".{out_dir.name}.{kind}-{os.getpid()}-"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (an unknown owner counts as alive: its folders are left alone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def recover(out_dir: str | Path) -> None:
    """Clean up after writers of ``out_dir`` that died: their scratch folders are removed, and when one died
    between moving the previous package aside and putting the new one in place (``out_dir`` missing), the previous
    package is moved back first. Folders of live writers are left alone."""
    out_dir = Path(out_dir).absolute()
    if not out_dir.parent.is_dir():
        return
    dead = []
    for path in out_dir.parent.iterdir():
        match = SCRATCH_DIR.match(path.name)
        if match and match["name"] == out_dir.name and path.is_dir() and not _alive(int(match["pid"])):
            dead.append((match["kind"], path))
    for kind, path in dead:
        if kind == "old" and not out_dir.exists() and (path / "pkg" / MANIFEST_NAME).is_file():
            os.replace(path / "pkg", out_dir)
    for _kind, path in dead:
        shutil.rmtree(path, ignore_errors=True)


#: errnos of a write that found no room: a full disk, a quota, the file size limit (RLIMIT_FSIZE, `ulimit -f`)
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: below this much free space an engine's opaque write error (a C++ exception without an errno) counts as a full disk
LOW_SPACE = 1 << 20


def out_of_space(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a write that found no room (see ``NO_SPACE``).
    Converters re-raise such errors as they are, so that ``staging`` can say what to do instead of a converter's
    summary of a failed export."""
    seen: BaseException | None = error
    for _ in range(16):  # a chain, not a loop: bounded in case of a cycle
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _no_space(error: BaseException, stage: Path) -> bool:
    """``out_of_space``, or an engine's own error (or a converter's summary of one) on a disk that is now full."""
    if out_of_space(error):
        return True
    if isinstance(error, MmedgeError) and type(error) is not ExportError:
        return False
    try:
        free = os.statvfs(stage)
    except OSError:
        return False
    return free.f_bavail * free.f_frsize < LOW_SPACE


def check_room(folder: Path, nbytes: int) -> None:
    """Raise a no-space ``OSError`` (``staging`` names the fix) when a file of ``nbytes`` cannot be written in
    ``folder``: over the file size limit or the free space. For writers that abort the whole process instead of
    raising when a write fails (the TFLite converter's LLVM back end: "IO failure on output stream")."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise OSError(errno.EFBIG, f"a file of about {nbytes} bytes is over the file size limit ({limit} bytes)")
    free = os.statvfs(folder)
    if nbytes > free.f_bavail * free.f_frsize:
        raise OSError(errno.ENOSPC, f"a file of about {nbytes} bytes does not fit in the free space of {folder}")


@contextlib.contextmanager
def staging(out_dir: str | Path) -> Iterator[Path]:
    """Yield a staging directory; on success ``commit`` must have been called, on error it is removed."""
    out_dir = Path(out_dir).absolute()
    recover(out_dir)
    _check_target(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=_scratch_prefix(out_dir, "staging"), dir=out_dir.parent))
    except OSError as e:
        why = ("part of that path is a file, not a directory" if isinstance(e, (FileExistsError, NotADirectoryError))
               else e.strerror)
        raise ExportError(f"cannot write under {out_dir.parent}: {why}; choose a writable output path") from None
    try:
        yield stage
    except Exception as e:
        if _no_space(e, stage):
            kept = "the package there is unchanged" if (out_dir / MANIFEST_NAME).is_file() else "nothing was written"
            raise ExportError(f"out of disk space writing {out_dir}: free space on that disk (or raise the file size "
                              f"limit, `ulimit -f`) or choose an output path with room; {kept}") from None
        if isinstance(e, OSError) and e.errno in NOT_WRITABLE:
            raise ExportError(f"cannot write {e.filename or out_dir}: {e.strerror}; choose a writable output "
                              "path") from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def commit(stage: Path, out_dir: str | Path, manifest: Manifest) -> Path:
    """Checksum every staged file, write the manifest last, fsync, and swap the directory into place."""
    out_dir = Path(out_dir).absolute()
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    manifest.files = {p.relative_to(stage).as_posix(): sha256_file(p) for p in files}
    tmp = stage / (MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_dict(), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, stage / MANIFEST_NAME)
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp made it 0700; a package is a normal directory for other users
    _check_target(out_dir)
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=_scratch_prefix(out_dir, "old"), dir=out_dir.parent))
        os.replace(out_dir, old / "pkg")
    final_stage = Path(tempfile.mkdtemp(prefix=_scratch_prefix(out_dir, "final"), dir=out_dir.parent))
    os.rmdir(final_stage)
    os.replace(stage, final_stage)
    os.replace(final_stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir
