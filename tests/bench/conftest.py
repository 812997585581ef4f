"""Benchmarks are run by hand (``python -m tests.bench.bench_proxy``), never by pytest.

Their files are named ``bench_*.py`` (outside pytest's default ``test_*.py``
pattern); the helper servers and the benchmark are also ignored explicitly so a
run over ``tests/`` can never start them.
"""

collect_ignore_glob = ["bench_*.py", "*_server.py"]
