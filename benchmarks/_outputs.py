"""What a benchmark script leaves behind: its JSON, the Markdown it renders from that JSON, and its plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def write_outputs(result: Any, out: Path, markdown: Callable[[Any], str], plot: Callable[[Any, Path], None]) -> None:
    """OUT (the JSON), OUT.md and OUT.png beside it; the table is printed too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    plot(result, out.with_suffix(".png"))
    print(markdown(result))


def save_figure(fig: Any, axes: Any, path: Path) -> None:
    """Light grid and a legend on each of `axes`, then the figure written to `path`."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
