"""What a benchmark script leaves behind: its JSON, the Markdown it renders from that JSON, and its plot."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional


@contextlib.contextmanager
def replaced_on_success(path: Path) -> Iterator[Path]:
    """A path beside `path` to write; once the block succeeds it is flushed to disk and renamed onto `path`, so a
    killed or failed run leaves the earlier file whole (and no temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """`text` written to `path` through a temporary file beside it, so a killed run never leaves half a file."""
    with replaced_on_success(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_outputs(result: Any, out: Path, markdown: Callable[[Any], str],
                  plot: Optional[Callable[[Any, Path], None]] = None) -> None:
    """OUT (the JSON), OUT.md and (with `plot`) OUT.png beside it, each written atomically; the table is printed
    too."""
    out = Path(out)
    text = markdown(result)  # before any write: a result the table cannot render replaces no file
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    write_text_atomic(out.with_suffix(".md"), text)
    if plot is not None:
        with replaced_on_success(out.with_suffix(".png")) as tmp:
            plot(result, tmp)
    print(text)


def save_figure(fig: Any, axes: Any, path: Path) -> None:
    """Light grid and a legend on each of `axes`, then the figure written to `path` (as PNG, whatever its name)."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
