"""Two real processes creating one new map store at the same instant, round after round (run by test_store's race
test): each round both wait at a barrier, then extract with their own model into the round's new folder."""
from __future__ import annotations

from pathlib import Path

from tiny_encoder import TinyEncoder


def race(seed: int, images: list, root: str, rounds: int, barrier, results) -> None:
    """Extract with TinyEncoder(seed) into root/<round> after each barrier; put (round, seed, outcome, lost) on
    results, `lost` True when this process also created the store and found another's in place (a real race)."""
    from registry.evaluation import StoreMismatchError, extract_to_store, store_extract

    model = TinyEncoder(seed=seed)
    created = []
    real_create = store_extract._create

    def create(*args, **kwargs):
        created.append(real_create(*args, **kwargs))
        return created[-1]

    store_extract._create = create  # only records what the real create returned
    for r in range(rounds):
        created.clear()
        barrier.wait(timeout=120)
        try:
            extract_to_store(model, images, Path(root) / f"{r:03d}", chunk_size=2, batch_size=2, device="cpu",
                             progress=False)
            outcome = "wrote"
        except StoreMismatchError as err:
            outcome = "refused " + str(err)
        except Exception as err:  # noqa: BLE001  (reported to the test, which fails on it)
            outcome = f"error {type(err).__name__}: {err}"
        results.put((r, seed, outcome, created == [False]))
