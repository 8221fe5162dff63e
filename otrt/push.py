"""A local ImageFolder tree as one zip to upload (``otrt datasets push``)."""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def zipped_tree(directory: Path) -> Iterator[Path]:
    """``directory``'s files in a temporary zip, stored as they are (images are already
    compressed): paths relative to ``directory``, symbolic links and hidden files left out."""
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    with tempfile.TemporaryDirectory(prefix="otrt-push-") as scratch:
        archive = Path(scratch) / f"{directory.resolve().name or 'dataset'}.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
            for path in sorted(directory.rglob("*")):
                relative = path.relative_to(directory)
                hidden = any(part.startswith(".") for part in relative.parts)
                if path.is_file() and not path.is_symlink() and not hidden:
                    out.write(path, relative.as_posix())
        yield archive
