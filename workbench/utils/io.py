"""File helpers shared by every step: atomic writes and PaddleX-style ``.bak`` backups.

Input files are never modified in place. Outputs are written to a temporary file in the
same directory and renamed over the target, so a crash leaves either the old file or the
complete new one, never a half-written file. A process killed mid-write leaves its temporary
file (``.<name>.<8 random characters>.tmp``, :data:`TEMP_FILE_RE`); the steps that write into a
folder remove such leftovers there first (:func:`remove_stale_temp_files`). A ``.bak`` appears
complete or not at all (a hard link to the old file, else a copy renamed into place). Several
files replaced together (:func:`replace_all_with_backup`) are all written beside their targets
before the first is renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files 0600

# the names _mkstemp gives: "." + target name + "." + tempfile's 8 random characters + ".tmp"
TEMP_FILE_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def _mkstemp(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` (same file system, so the final rename is atomic)."""
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that an interrupted atomic write left in ``folder`` (not in
    subfolders): regular files named like :data:`TEMP_FILE_RE`, nothing else. Returns them.

    Call it only on a folder this process is about to write, where no other writer runs."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        if TEMP_FILE_RE.match(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default))


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, bytes):
        return o.decode("ascii")
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serialisable")


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, read as UTF-8 with or without a byte-order mark (``utf-8-sig``: some
    Windows tools write one); a syntax error names the file, line and column."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e


def backup_path(path: str | os.PathLike) -> Path:
    """The ``.bak`` name PaddleX uses; if it exists already, ``.bak1``, ``.bak2``… so no backup is lost."""
    path = Path(path)
    candidate = path.with_name(path.name + ".bak")
    i = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak{i}")
        i += 1
    return candidate


class StagedFile:
    """The complete new content of ``target``, already written (and flushed to disk) to a hidden
    temporary file beside it (:func:`stage_file`); :func:`replace_with_backup` renames it into place.
    A process killed before that leaves only the temporary file, which the next run removes."""

    def __init__(self, target: str | os.PathLike, tmp: str | os.PathLike):
        self.target = Path(target)
        self.tmp = Path(tmp)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"StagedFile({str(self.target)!r})"


def stage_file(path: str | os.PathLike, data: bytes) -> StagedFile:
    """Write ``data`` completely to a temporary file beside ``path`` (nothing visible changes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return StagedFile(path, tmp)


def _backup_copy(path: Path, bak: Path) -> None:
    """Make ``bak`` a complete copy of ``path`` in one step: a hard link (the old file itself, which
    the following rename leaves under the backup name only), else a copy to a temporary file renamed
    to ``bak``. A kill never leaves a partial backup under its ``.bak`` name."""
    try:
        os.link(path, bak)
        return
    except OSError:  # no hard links here (some network/FAT file systems): copy, then rename
        pass
    fd, tmp = _mkstemp(bak)
    os.close(fd)
    try:
        shutil.copy2(path, tmp)
        os.replace(tmp, bak)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def replace_with_backup(path: str | os.PathLike, data: bytes | StagedFile, backup: bool = True) -> Path | None:
    """Write ``data`` (bytes, or a :class:`StagedFile` of ``path``) to ``path``; an existing file is
    kept as ``.bak`` first. ``backup=False`` (a file the caller itself wrote earlier): the old file is
    kept under a hidden temporary name instead (returned, for the caller to roll back with and then
    delete; a leftover is removed like any temporary file).

    Order matters for safety: the new content is written completely to a temporary file
    first; only then is the old file kept under its backup name (a hard link, or a complete
    copy renamed into place) and the new file renamed over it. If anything fails before the
    rename, the original is untouched. Returns the backup path, or None when there was nothing
    to back up.
    """
    path = Path(path)
    staged = data if isinstance(data, StagedFile) else stage_file(path, data)
    if staged.target != path:
        staged.discard()
        raise ValueError(f"staged file of {staged.target} given for {path}")
    bak = None
    try:
        if path.exists():
            bak = backup_path(path) if backup else _hidden_name(path)
            _backup_copy(path, bak)
        os.replace(staged.tmp, path)
    except BaseException:
        staged.discard()
        if bak is not None and bak.exists() and path.exists() and os.path.samefile(bak, path):
            bak.unlink()  # the backup of a file that was not replaced
        raise
    return bak


def _hidden_name(path: Path) -> Path:
    """A free temporary-file name beside ``path`` (``TEMP_FILE_RE``), nothing created there."""
    fd, tmp = _mkstemp(path)
    os.close(fd)
    os.unlink(tmp)
    return Path(tmp)


def replace_json_with_backup(path: str | os.PathLike, obj: Any) -> Path | None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default)
    return replace_with_backup(path, text.encode("utf-8"))


def replace_all_with_backup(files: dict[str | os.PathLike, bytes | StagedFile],
                            own: Mapping[str | os.PathLike, str] | None = None) -> list[Path]:
    """Replace several files as one step: each old file is kept as ``.bak``; if any write fails, the
    files already replaced are put back as they were and the error is raised. Returns the backups.

    ``own``: path -> SHA-256 of files the caller wrote itself earlier (e.g. a panel re-run in one
    session); an old file whose content is still exactly that is replaced without a ``.bak`` (the
    user's original was backed up when it was first replaced), any other is backed up as usual.

    Every new content is written to its temporary file first (``StagedFile`` values are already
    written), and only then are the files renamed into place one after another, so a process killed
    at any moment before the renames leaves every old file as it was (and hidden temporary files
    only). What stays not atomic is the short run of renames itself: no file system renames several
    files at once."""
    mine = {Path(p).resolve(): digest for p, digest in (own or {}).items()}
    done: list[tuple[Path, Path | None, bool]] = []
    staged: list[StagedFile] = []
    try:
        for path, data in files.items():
            staged.append(data if isinstance(data, StagedFile) else stage_file(path, data))
        for s in staged:
            digest = mine.get(s.target.resolve())
            is_own = digest is not None and s.target.is_file() and file_sha256(s.target) == digest
            bak = replace_with_backup(s.target, s, backup=False) if is_own else replace_with_backup(s.target, s)
            done.append((s.target, bak, is_own))
    except BaseException:
        for path, bak, _ in reversed(done):
            if bak is not None:
                os.replace(bak, path)
            else:
                path.unlink(missing_ok=True)
        for s in staged:
            s.discard()
        raise
    for _, bak, is_own in done:
        if is_own and bak is not None:
            bak.unlink(missing_ok=True)  # the rollback copy of the caller's own earlier file
    return [bak for _, bak, is_own in done if bak is not None and not is_own]
