"""What a benchmark script leaves behind: its JSON, the Markdown it renders from that JSON, and its plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from registry._util.atomic import atomic_path


def write_text_atomic(path: Path, text: str) -> None:
    """`text` written to `path` through a temporary file beside it, so a killed run never leaves half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_outputs(result: Any, out: Path, markdown: Callable[[Any], str],
                  plot: Optional[Callable[[Any, Path], None]] = None) -> None:
    """OUT (the JSON), OUT.md and (with `plot`) OUT.png beside it, each written atomically; the table is printed
    too."""
    out = Path(out)
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    write_text_atomic(out.with_suffix(".md"), text)
    if plot is not None:
        with atomic_path(out.with_suffix(".png")) as tmp:
            plot(result, tmp)
    print(text)


def save_figure(fig: Any, axes: Any, path: Path) -> None:
    """Light grid and a legend on each of `axes`, then the figure written to `path` (as PNG, whatever its name)."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
