"""The one root exception of the project and its few families."""


class DriftlineError(Exception):
    """Root of every error driftline raises on purpose."""


class SpecError(DriftlineError):
    """The pipeline spec is invalid; the message names the key and what was expected."""


class KafkaLauncherError(DriftlineError):
    """The local Apache Kafka launcher could not fetch, format, start or stop the broker."""


class RecordError(DriftlineError):
    """One input record is unusable; ``reason`` is a short stable code for metrics and the DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class KafkaConfigError(DriftlineError):
    """The Kafka client settings (spec ``[kafka]``, ``--kafka-config`` file, environment) are
    wrong: a configuration error, found before connecting (exit status 2)."""


class UsageError(DriftlineError):
    """The command line or the configuration is wrong (exit status 2, like argparse's)."""
