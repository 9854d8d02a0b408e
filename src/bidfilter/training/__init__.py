"""Training: from auction logs to a published model version (``bidfilter train``).

``config`` holds the settings (plain dataclasses); ``dataset`` turns logs into (request, partner)
rows split by time; ``model`` and ``partner_boosters`` fit the XGBoost trees; ``thresholds`` picks
each partner's cut-off; ``evaluate`` and ``plots`` make the report; ``pipeline`` runs the steps
and publishes. ``spark`` is the same run on Apache Spark (``--engine spark``).

Nothing is imported here: importing a submodule (or a Spark worker importing
``bidfilter.training.spark.workers``) pays only for what that submodule imports.
"""
