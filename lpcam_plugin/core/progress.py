"""Progress bars that follow the package convention: ``progress=None`` hides them off a TTY."""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T],
    *,
    progress: Optional[bool] = None,
    desc: Optional[str] = None,
    total: Optional[int] = None,
    leave: bool = True,
    position: Optional[int] = None,
) -> Iterator[T]:
    """Wrap ``iterable`` in a ``tqdm.auto`` bar.

    ``progress=None`` lets tqdm decide (hidden when output is not a TTY, and when
    ``TQDM_DISABLE=1``); ``True`` / ``False`` force it on / off. Without tqdm installed the
    iterable is returned unchanged.
    """
    if progress is False:
        return iter(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iter(iterable)
    disable = None if progress is None else False
    return iter(tqdm(iterable, desc=desc, total=total, leave=leave, position=position, disable=disable))
