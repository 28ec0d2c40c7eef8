"""Maps of your own images to localize new frames against: `Map.build` / `Map.open` / `add` / `query` /
`sequence_query` over the Lance map store and a PlaceIndex, running on the runtime the map was built with (see
registry.maps.core). Command line: `vpr map build|add|query|info`."""
from .core import Map
from .manifest import MapError
from .match import Match

__all__ = ["Map", "MapError", "Match"]
