"""The chaos suite: faults injected into real workers and brokers, each run compared with an
undisturbed run of the same input (tests/reference_run.py).

- test_worker_kills.py: an exactly_once worker SIGKILLed again and again at random points;
- test_group_kill.py: two workers, one SIGKILLed for good;
- test_fuzz_corpus.py: 52 kinds of hostile records (fuzz_corpus.py) in a real stream;
- broker faults live with the broker tests: tests/integration/test_broker_restart.py (the only
  broker kill -9 / stopped and restarted) and tests/integration/test_three_brokers.py (one of
  three brokers SIGKILLed).
"""
