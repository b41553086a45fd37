"""What a visitor should know about how a model saw their picture: blank, a photo sent to a digit model."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from PIL import Image

from ..images import looks_like_photo
from ..predict import Predictor

PHOTO_TO_DIGITS = "This looks like a photo, not a digit"
NOTHING_TO_SEE = "This image shows nothing to recognise"
_SMALLEST_SIDE = 8  # px: a picture smaller than this shows no shape (MNIST's strokes alone are 2-3 px wide)
_ONE_SHADE = 8  # of 255 grey levels: a picture whose darkest and lightest pixels are this close is blank


def input_notes(picture: Image.Image, predictors: Sequence[Predictor]) -> list[str]:
    """:func:`input_note` for several models seeing one picture, each said once: a photo sent to several digit
    models is one notice naming them all (it was one per model, the last model's first)."""
    if blank := _nothing_to_see_note(picture):  # checked once: it reads every pixel
        return [blank]
    # Whether it looks like a photo: asked once for all the digit models (49 ms for a 12 MP photo), never for others.
    is_photo = functools.cache(functools.partial(looks_like_photo, picture))
    notes = [_model_note(p, is_photo) for p in predictors]
    photo = [p for p, n in zip(predictors, notes) if n.startswith(PHOTO_TO_DIGITS)]
    if len({p.name for p in photo}) > 1:  # one model on both sides of a compare: its own notice, said once
        labels = {tuple(p.labels) for p in photo}
        digits = f"the digits {', '.join(photo[0].labels)}" if len(labels) == 1 else "their digits"
        merged = (f"{PHOTO_TO_DIGITS}: {' and '.join(p.name for p in photo)} know only {digits}, so their answers "
                  f"say nothing about the photo")
        notes = [merged if n.startswith(PHOTO_TO_DIGITS) else n for n in notes]
    return list(dict.fromkeys(n for n in notes if n))


def input_note(picture: Image.Image, predictor: Predictor) -> str:
    """What a visitor should know about how ``predictor`` saw ``picture`` (empty: nothing)."""
    return _nothing_to_see_note(picture) or _model_note(predictor, lambda: looks_like_photo(picture))


def _nothing_to_see_note(picture: Image.Image) -> str:
    blank = nothing_to_see(picture)
    return f"{NOTHING_TO_SEE}: {blank}, so any answer is a guess" if blank else ""


def _model_note(predictor: Predictor, is_photo: Callable[[], bool]) -> str:
    """What a digit model's answer is worth, asking ``is_photo()`` only for a digit model."""
    if predictor.kind != "digits":
        return ""
    if is_photo():
        return (f"{PHOTO_TO_DIGITS}: {predictor.name} knows only the digits "
                f"{', '.join(predictor.labels)}, so this answer says nothing about the photo")
    return "digit model: the image was centred and scaled the way MNIST digits are"


def nothing_to_see(picture: Image.Image) -> str:
    """Why no model can recognise anything in ``picture`` (too small, or one shade), or empty."""
    if min(picture.size) < _SMALLEST_SIDE:
        return f"it is {picture.width}x{picture.height} px"
    low, high = picture.convert("L").getextrema()
    if high - low <= _ONE_SHADE:
        return "it is a single shade"
    return ""


# ---------------------------------------------------------------------------
# Fine-tuning jobs

