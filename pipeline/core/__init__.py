"""The kernel every layer builds on: encoding, the window convention, genomes, specs, runtime, files.

Nothing here imports torch at import time except :mod:`~pipeline.core.runtime`, so the command line
can read the spec's option declarations without loading torch.
"""
