"""The emotions' colours in pictures: the serve page and `emomon plot` draw with the same.

Paul Tol's "muted" qualitative palette (https://personal.sron.nl/~pault/): nine colours
chosen to stay distinct for readers with the common colour-vision deficiencies and on
light and dark backgrounds. The page (serve/web/index.html) holds the same list (a test
keeps them equal). A model's emotions take the colours in the model's order; a tenth
emotion and on starts the list again.
"""

from __future__ import annotations

from collections.abc import Sequence

TOL_MUTED = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499")


def colours(emotions: Sequence[str]) -> dict[str, str]:
    """Each emotion's colour, in the model's order."""
    return {e: TOL_MUTED[k % len(TOL_MUTED)] for k, e in enumerate(emotions)}
