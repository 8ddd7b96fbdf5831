"""OpenVINO runtime for CPU: Kosmos-2 exported to IR (:mod:`.export`) and served by
:class:`~.engine.OpenVINOEngine`, which has the torch engine's interface.

Nothing here is imported by :mod:`kosmos2_engine` itself: importing this package needs
``openvino`` (and, for exporting, ``nncf``)."""
