"""Evaluating Kosmos-2's boxes on labelled data: a user's project (COCO metrics, the threshold
to cut at, a report), and the paper's protocols (RefCOCO/+/g, Flickr30k Entities).

``python src/evaluate.py`` is its command (:mod:`.cli`).
"""
