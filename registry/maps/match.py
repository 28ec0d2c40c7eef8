"""Match: one map image found for a query, as the map, the command line and the service report it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class Match:
    """The `rank`-th (1 = best) map image for a query: its store `row`, `place` id (an int when the map's place ids
    are integers), `distance` (squared L2 of the unit descriptors, 2 - 2 cos; for a sequence match the sequence
    score, lower is better), `image` (the file the map was built from) and `coords` (None without coordinates)."""

    rank: int
    row: int
    place: Any
    distance: float
    image: str
    coords: Optional[Tuple[float, float]] = None

    def as_dict(self) -> Dict[str, Any]:
        """JSON-ready: plain ints, floats and strings; coords as [x, y] or None."""
        place = self.place if isinstance(self.place, (int, str)) and not isinstance(self.place, bool) \
            else str(self.place)
        return {"rank": int(self.rank), "row": int(self.row), "place": place, "distance": float(self.distance),
                "image": str(self.image), "coords": None if self.coords is None else [float(c) for c in self.coords]}
