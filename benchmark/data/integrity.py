"""Content checks shared by the dataset modules (``data check``): IDX files against their
headers, files against their published md5, list files against their expected line counts and
the files they name, image folders against their class count and empty classes.

Each check returns problem messages; a message names the file, says what was expected and what
was found (``corrupt: <file>, expected N bytes, found M``), and ends with the fix.
"""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Iterable

from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.utils import calculate_md5

IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # IDX type code -> bytes
EXAMPLES = 3  # names shown when many files share a problem


def corrupt(path: Path, expected: object, found: object, unit: str, fix: str) -> str:
    """The message for ``path`` holding ``found`` ``unit`` where ``expected`` were due."""
    return f"corrupt: {path}, expected {expected} {unit}, found {found}; {fix}"


def _examples(names: list[str]) -> str:
    return ", ".join(names[:EXAMPLES]) + (", ..." if len(names) > EXAMPLES else "")


def idx_shape(path: Path, fix: str) -> tuple[tuple[int, ...] | None, list[str]]:
    """(shape from the header, problems) of an IDX file: a header that is not IDX or holds no
    items, or a size other than header + product(shape) x item size, is a problem (shape None
    when unreadable or empty)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_ITEM_BYTES:
            return None, [f"corrupt: {path}, expected an IDX header (00 00 <type> <dims>), "
                          f"found {magic.hex(' ') or 'nothing'}; {fix}"]
        dims = fh.read(4 * magic[3])
    header = 4 + 4 * magic[3]
    if len(dims) < 4 * magic[3]:
        return None, [corrupt(path, f"at least {header}", size, "bytes", fix)]
    shape = struct.unpack(f">{magic[3]}I", dims)
    if not shape or shape[0] == 0:  # nothing to train or test on: every later step would fail
        return None, [f"corrupt: {path}, expected at least one item, its header says "
                      f"{'no dimensions' if not shape else 'shape ' + 'x'.join(map(str, shape))}; {fix}"]
    expected = header + math.prod(shape) * IDX_ITEM_BYTES[magic[2]]
    return shape, [] if size == expected else [corrupt(path, expected, size, "bytes", fix)]


def md5_problems(path: Path, expected: str, fix: str) -> list[str]:
    """A file whose md5 is not ``expected`` (the checksum its publisher gives)."""
    found = calculate_md5(str(path))
    if found == expected:
        return []
    return [f"corrupt: {path}, expected md5 {expected}, found {found} "
            f"({path.stat().st_size} bytes); {fix}"]


def list_lines(path: Path) -> list[str]:
    """The non-blank lines of a list file, stripped (undecodable bytes replaced, so that a
    damaged list shows up as names that match no file)."""
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def line_count_problems(path: Path, expected: int, fix: str) -> list[str]:
    """A list file that is absent or holds other than ``expected`` non-blank lines."""
    if not path.is_file():
        return [f"missing: {path} ({expected} lines); {fix}"]
    found = len(list_lines(path))
    return [] if found == expected else [corrupt(path, expected, found, "lines", fix)]


def listed_file_problems(list_file: Path, files: Iterable[Path], fix: str) -> list[str]:
    """Files named by ``list_file`` that are absent or empty (and an empty list)."""
    files = list(files)
    if not files:
        return [corrupt(list_file, "at least 1", 0, "entries", fix)]
    problems = []
    missing = [p for p in files if not p.is_file()]
    if missing:
        problems.append(f"missing: {len(missing)} of {len(files)} files listed in {list_file}, "
                        f"e.g. {_examples([str(p) for p in missing])}; {fix}")
    empty = [p for p in files if p.is_file() and p.stat().st_size == 0]
    if empty:
        problems.append(f"corrupt: {len(empty)} of {len(files)} files listed in {list_file} are "
                        f"empty (0 bytes), e.g. {_examples([str(p) for p in empty])}; {fix}")
    return problems


def _has_image(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in entries)


def image_files_problems(folder: Path, fix: str) -> list[str]:
    """A flat image folder that is absent or holds no image."""
    if not folder.is_dir():
        return [f"missing: folder {folder}; {fix}"]
    return [] if _has_image(folder) else [f"corrupt: {folder}, expected images, found none; {fix}"]


def image_folder_problems(folder: Path, classes: int, fix: str,
                          ignore: tuple[str, ...] = ()) -> list[str]:
    """An ImageFolder-style ``folder/<class>/<image>`` tree without exactly ``classes`` class
    folders (``ignore``-d names left out), or with a class folder holding no image."""
    if not folder.is_dir():
        return [f"missing: folder {folder}; {fix}"]
    found = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ignore)
    problems = [] if len(found) == classes else [corrupt(folder, classes, len(found),
                                                         "class folders", fix)]
    empty = [p.name for p in found if not _has_image(p)]
    if empty:
        problems.append(f"corrupt: {folder}, {len(empty)} of {len(found)} class folders hold no "
                        f"image, e.g. {_examples(empty)}; {fix}")
    return problems
