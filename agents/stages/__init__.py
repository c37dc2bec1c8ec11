"""The stages of one input partition's batch step, one job per module.

:class:`driftline.agents.pipeline.PartitionPipeline` composes them, in this order:

==================  ===============================================================================
module              job
==================  ===============================================================================
``records``         what comes in: :class:`RawRecord`, a batch as :class:`RecordColumns`
``decode``          raw records -> a :class:`~frame.Frame` of valid events (the rest: dead letters)
``bounds``          entity-id length and event-time bounds (``key_too_long``, ``future_event``)
``dead_letters``    one dead-letter document per rejected record; one log line per reason per 10 s
``lateness``        events behind the watermark minus grace -> the late topic
``batch_join``      batch features from the offline table join the model vector
``skew``            training-serving skew: batch features vs their streaming twins
``predict``         the model's scores for the batch
``bh_correction``   Benjamini-Hochberg levels for the test-based detectors
``detect``          detectors on fields, features and predictions; alert window bounds
``multivariate``    ``[[multivariate]]`` detectors on rows of several features (kind multivariate)
``alert_episodes``  one ``firing`` and one ``resolved`` alert per drift episode
``alerts``          alert documents and their deterministic ids
``encode``          feature vectors and predictions, encoded column-wise
``labels``          predictions wait for labels; label batches join, grade and detect
``outcome``         what goes out: :class:`BatchOutcome`, and per-stage timing
==================  ===============================================================================

Stages work on whole columns (numpy arrays): none adds work per event in Python.
"""
