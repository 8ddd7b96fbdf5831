"""Batch jobs beside the serving app: labelling whole projects on Ray (:mod:`.labelling`) and
evaluating on labelled projects (:mod:`.evaluation`). They use the app through its public
names only, and Supervisely project I/O through :mod:`supervisely_io`."""
