"""driftline: streaming features, online predictions and drift detection on Apache Kafka."""

__version__ = "0.1.0"
