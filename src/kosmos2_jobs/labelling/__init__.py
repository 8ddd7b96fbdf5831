"""Labelling whole projects: a batch job on Ray Data, one engine per actor (see :mod:`.job`).

``python src/label.py`` is its command (:mod:`.cli`). Importing the package imports nothing
heavy: Ray and the engine load when a job runs.
"""
