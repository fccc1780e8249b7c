"""The experiment wing: a comparison of strategies and what it yields.

* ``run``: the orchestration (``compare``, one arm at a time, the ``Tracker`` it reports to);
* ``results``: ``ArmResult`` and ``Comparison``, the plain objects it returns;
* ``tables``: results, layer-sweep and shift tables (pure functions of results);
* ``shift``: the shift analysis after each arm (feature distances, CKA, AdaBN, Grad-CAM);
* ``shared``: ``SharedData``, the datasets and feature caches built once and lent to every arm.

Nothing is imported here, so that readers of results (``medtl.tracking``) do not load the orchestration.
"""
