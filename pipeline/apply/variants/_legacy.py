"""The keyword forms of the wing's calls before options objects, for the old module paths only.

``pipeline.apply.vcf.score_vcf(checkpoint, vcf, out, centered=True, device="cpu")`` and the like keep
working through :mod:`pipeline.apply._moved`, which warns and names the new call; new code passes an
options object (:mod:`pipeline.apply.variants.options`). ``SUFFIXES`` and ``MODES`` are the registries'
keys, as the old constants were.
"""

from __future__ import annotations

from typing import Any

from pipeline.apply.variants import catalogue as _catalogue
from pipeline.apply.variants import lookup as _lookup
from pipeline.apply.variants import score_vcf as _score_vcf
from pipeline.apply.variants.catalogue import CatalogueSummary
from pipeline.apply.variants.options import CatalogueOptions, LookupOptions, ScoreVcfOptions
from pipeline.apply.variants.rows import VcfSummary
from pipeline.apply.variants.scorers import SCORERS
from pipeline.apply.variants.writers import WRITERS


def score_vcf(
    checkpoint: str, vcf: str, out: str, *, centered: bool = False, exact: bool = False, **options: Any
) -> VcfSummary:
    """``score_vcf`` called with keywords: ``centered``/``exact`` pick the mode, ``progress`` and the
    :class:`ScoreVcfOptions` fields as keywords."""
    progress = options.pop("progress", True)
    mode = "exact" if exact else "centered" if centered else options.pop("mode", "shared")
    return _score_vcf.score_vcf(checkpoint, vcf, out, ScoreVcfOptions(mode=mode, **options), progress=progress)


def build_catalogue(checkpoint: str, out: str, **options: Any) -> CatalogueSummary:
    """``build_catalogue`` called with ``progress`` and the :class:`CatalogueOptions` fields as keywords."""
    progress = options.pop("progress", True)
    if options.get("chroms") is not None and not isinstance(options["chroms"], str):
        options["chroms"] = ",".join(options["chroms"])  # a list of contigs, as the old call took
    return _catalogue.build_catalogue(checkpoint, out, CatalogueOptions(**options), progress=progress)


def lookup(catalogue: str, out: str, **options: Any) -> VcfSummary:
    """``lookup`` called with ``progress`` and the :class:`LookupOptions` fields as keywords."""
    progress = options.pop("progress", True)
    options["variants"] = options.get("variants") or ()
    return _lookup.lookup(catalogue, out, LookupOptions(**options), progress=progress)


MOVED_TO = {
    "score_vcf": "import it from pipeline.apply.variants.score_vcf and pass a ScoreVcfOptions",
    "build_catalogue": "import it from pipeline.apply.variants.catalogue and pass a CatalogueOptions",
    "lookup": "import it from pipeline.apply.variants.lookup and pass a LookupOptions",
    "SUFFIXES": "use the keys of pipeline.apply.variants.writers.WRITERS",
    "MODES": "use the keys of pipeline.apply.variants.scorers.SCORERS",
}
"""What to use instead of each name of this module (what the deprecation warning says)."""


def __getattr__(name: str) -> Any:
    """``SUFFIXES`` and ``MODES``: the keys of the registries that replaced them."""
    if name == "SUFFIXES":
        return tuple(WRITERS)
    if name == "MODES":
        return tuple(SCORERS)
    raise AttributeError(name)
