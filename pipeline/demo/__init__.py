"""The embedded default: a synthetic genome (:mod:`~pipeline.demo.synthetic`) and the demo end to end
(:mod:`~pipeline.demo.run`: genome -> distill -> train -> evaluate -> predict -> plot)."""

from pipeline.demo.run import DEMO_SPEC, run_demo
from pipeline.demo.synthetic import HG19_LENGTHS, synth_genome

__all__ = ["DEMO_SPEC", "HG19_LENGTHS", "run_demo", "synth_genome"]
